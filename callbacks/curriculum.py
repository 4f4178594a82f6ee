"""Moves the training sampler to the current epoch's source mix (seed 004's curriculum) and logs the mix."""

from __future__ import annotations

import lightning as L


class SourceCurriculum(L.Callback):
    """At each training epoch start, ``set_epoch`` the DataModule's ``train_sampler`` and log
    ``train/mix_<source>`` (the expected share of the epoch's draws), so TensorBoard shows the
    curriculum's stages. Does nothing when the DataModule samples uniformly.
    """

    def __init__(self, log_mix: bool = True, verbose: bool = True):
        self.log_mix = log_mix
        self.verbose = verbose
        self.last_mix: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = getattr(trainer.datamodule, "train_sampler", None) if trainer.datamodule is not None else None
        if sampler is None:
            return
        sampler.set_epoch(trainer.current_epoch)
        mix = sampler.mix()
        changed = mix != self.last_mix
        self.last_mix = mix
        if self.log_mix:
            for source, share in mix.items():
                pl_module.log(f"train/mix_{source}", share, on_step=False, on_epoch=True)
        if self.verbose and changed and trainer.is_global_zero:
            shares = ", ".join(f"{s} {v:.0%}" for s, v in sorted(mix.items()))
            print(f"\nepoch {trainer.current_epoch}: training source mix {shares}", flush=True)
