"""Seed 001's go/no-go rule: "if epoch 20 shows violent accuracy > 70 %, continue; otherwise stop
(and collect more data)". Ends a doomed run early with a message saying why."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from callbacks.run_health import report_alert
from suite.health import make_alert

log = logging.getLogger(__name__)


class EarlyDecision(L.Callback):
    """After validation of epoch ``by_epoch`` (1-based), compare ``monitor`` with ``threshold``.

    ``use_best`` takes the best value reached up to that epoch ("shows > 70 % by epoch 20"),
    otherwise the value at that epoch. ``mode="max"`` passes when the value is above the
    threshold, ``"min"`` when below. A failing run stops (``stop=True``) or only warns.
    ``advice`` is appended to the message (the seed's: collect more violent videos). A failing
    decision is the alarm ``early_decision`` of the run's health sink (alerts.json, train.log,
    trackers, console); a passing one is a console line.

    With ``max_gap``, an epoch whose ``gap_monitor`` (the class gap, a fraction) exceeds it does
    not count: predicting every clip violent gives a violent accuracy of 1.0 and a gap of 1.0,
    and must not pass for "learning the violent class". Accuracies and gaps are fractions, like
    every metric of the suite (the seed's 70 % is 0.70).
    """

    def __init__(
        self,
        monitor: str = "val/acc_violent",
        threshold: float = 0.70,
        by_epoch: int = 20,
        mode: str = "max",
        use_best: bool = True,
        stop: bool = True,
        max_gap: float | None = None,
        gap_monitor: str = "val/class_gap",
        advice: str = "the configuration is not learning the violent class; collect more violent videos "
                      "or revisit the configuration before training further",
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"EarlyDecision: mode must be 'max' or 'min', got {mode!r}")
        if by_epoch < 1:
            raise ValueError(f"EarlyDecision: by_epoch must be >= 1, got {by_epoch}")
        self.monitor, self.threshold, self.by_epoch = monitor, threshold, by_epoch
        self.mode, self.use_best, self.stop, self.advice = mode, use_best, stop, advice
        self.max_gap, self.gap_monitor = max_gap, gap_monitor
        self.best: float | None = None
        self.decision: str | None = None  # None until decided, then "continue" or "stop"
        self._missing_warned = False

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def passes(self, value: float) -> bool:
        return self._better(value, self.threshold)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.decision is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._missing_warned:
                self._missing_warned = True
                log.warning("EarlyDecision: metric '%s' is not logged; no decision will be taken", self.monitor)
            return
        value = float(value)
        gap = trainer.callback_metrics.get(self.gap_monitor)
        counts = self.max_gap is None or gap is None or float(gap) <= self.max_gap
        if counts and (self.best is None or self._better(value, self.best)):
            self.best = value
        epoch = trainer.current_epoch + 1
        if epoch < self.by_epoch:
            return
        observed = self.best if self.use_best else (value if counts else None)
        sign = ">" if self.mode == "max" else "<"
        gap_note = f" with {self.gap_monitor} <= {self.max_gap:g}" if self.max_gap is not None else ""
        shown = "none" if observed is None else f"{observed:.2f}"
        what = f"{'best ' if self.use_best else ''}{self.monitor}{gap_note} = {shown}"
        if observed is not None and self.passes(observed):
            self.decision = "continue"
            print(f"\nearly decision at epoch {epoch}: {what} {sign} {self.threshold:g} -> continue training")
            return
        self.decision = "stop"
        message = (f"early decision at epoch {epoch}: {what}, not {sign} {self.threshold:g} -> "
                   f"{'stopping' if self.stop else 'warning only'}: {self.advice}")
        values = {self.monitor: observed} if observed is not None else {}
        report_alert(trainer, make_alert(
            "early_decision", message, step=int(getattr(trainer, "global_step", 0)), epoch=trainer.current_epoch,
            severity="critical", action="stop" if self.stop else "warn", values=values, hint=self.advice),
            console_text=message)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "decision": self.decision}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.decision = state_dict.get("decision")
