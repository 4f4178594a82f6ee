"""Save and restore the RNG states in checkpoints, so a resumed run repeats the uninterrupted one.

Lightning restores model, optimizer, scheduler, loops and callbacks, but not the Python, NumPy
and torch generators that drive shuffling and augmentation. The state is taken when the
checkpoint is written (end of an epoch) and put back as soon as the checkpoint is restored —
on resume Lightning creates the next epoch's train iterator (which draws the shuffle order)
before any epoch hook runs — and again after a sanity check, which draws from the same generators.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RngState(L.Callback):
    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
            "numpy": {"keys": torch.from_numpy(np_state[1].copy()), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "torch": torch.get_rng_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
        self._apply(state_dict)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            self._apply(self._pending)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None

    @staticmethod
    def _apply(state: dict[str, Any]) -> None:
        py = state["python"]
        random.setstate((py[-2], tuple(py[:-2]), py[-1]))
        np_state = state["numpy"]
        np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                             np_state["has_gauss"], np_state["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
