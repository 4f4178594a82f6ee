"""Checkpoint checks: refuse a checkpoint of another task/architecture with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from suite.errors import DataError


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: no arbitrary pickle from a file a user was sent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"cannot load checkpoint {path}: {type(err).__name__}: {str(err)[:300]}") from None


def check_fits(model: torch.nn.Module, path: str | Path) -> None:
    """Raise when the checkpoint's weights do not match ``model`` (names or shapes)."""
    state = load_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise DataError(f"{path} is not a training checkpoint of this suite (no 'state_dict')")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            details.append(f"{len(mismatched)} of another shape (e.g. {k}: {tuple(state[k].shape)} "
                           f"in the file vs {tuple(own[k].shape)} here)")
        raise DataError(
            f"checkpoint {path} does not fit this model — it was made by another task or architecture: "
            + "; ".join(details)
        )
