"""The run's one alarm sink: health rules evaluated after every epoch, and per-batch alarms reported to it.

Every alarm, whatever raised it, reaches the user the same ways: the console once, train.log,
every tracker (``health/<rule>`` text and ``health/alerts`` / ``health/<rule>`` scalars, through
suite.trackers) and ``alerts.json`` in the run dir. The rules themselves are data (conf/health/<task>.yaml)
evaluated by suite.health; docs/run_health.md lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from callbacks.history import epoch_record
from suite.health import HealthMonitor, make_alert, rules_from_config
from suite.io import atomic_write_json
from suite.printing import warn_on_console
from suite.trackers import log_text

log = logging.getLogger(__name__)


class RunHealth(L.Callback):
    """Evaluate ``rules`` (name -> YAML node, see suite.health.Rule.from_config) on the epoch records and
    record every alarm, the rules' and those other callbacks :meth:`report`.

    ``alerts.json`` is written as ``[]`` when fitting starts (a report tells "no alarms" from "not
    watched") and rewritten atomically at each alarm. An alarm whose action is ``stop`` ends the run
    after the current epoch. The alarms and the rules' episodes are callback state: a resumed run
    keeps them and does not fire again for an episode it already reported.
    """

    def __init__(self, rules: Mapping[str, Any] | None = None, seed: str | None = None,
                 filename: str = "alerts.json", prefixes: tuple[str, ...] = ("train/", "val/")):
        from omegaconf import DictConfig, OmegaConf

        if isinstance(rules, DictConfig):
            rules = OmegaConf.to_container(rules, resolve=True)  # type: ignore[assignment]
        self.rules = rules_from_config(rules, None if seed is None else str(seed))  # type: ignore[arg-type]
        self.seed = None if seed is None else str(seed)
        self.monitor = HealthMonitor(self.rules)
        self.filename = filename
        self.prefixes = tuple(prefixes)
        self.history: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self._trainer: L.Trainer | None = None

    # -- the sink ---------------------------------------------------------------------------------------
    def _path(self, trainer: Any) -> Path:
        path = Path(self.filename)
        root = getattr(trainer, "default_root_dir", None) if trainer is not None else None
        return path if path.is_absolute() or root is None else Path(root) / path

    def _write(self, trainer: Any) -> None:
        if getattr(trainer, "is_global_zero", True):
            atomic_write_json(self._path(trainer), self.alerts)

    def _log_scalars(self, trainer: Any, scalars: dict[str, float], step: int) -> None:
        if not getattr(trainer, "is_global_zero", True):
            return
        for logger in getattr(trainer, "loggers", []) or []:
            try:
                logger.log_metrics(scalars, step=step)
            except Exception as err:  # a tracker's hiccup must not end the run it reports on
                log.warning("could not log %s: %s", sorted(scalars), err)

    def report(self, alert: dict[str, Any], trainer: Any = None, console: bool = True,
               console_text: str | None = None, prefix: str = "\n") -> None:
        """Record one alarm (the alerts.json format, suite.health.make_alert): console (``console_text``
        or a line built from the alarm), train.log, trackers, alerts.json; ``action: stop`` stops."""
        trainer = trainer if trainer is not None else self._trainer
        alert = {**alert, "seed": alert.get("seed") or self.seed}
        self.alerts.append(alert)
        where = f"epoch {alert['epoch']}" if alert.get("epoch") is not None else f"step {alert['step']}"
        line = console_text or (f"{'CRITICAL' if alert['severity'] == 'critical' else 'warning'} "
                                f"[{alert['rule']}] {alert['message']} ({where})")
        hint = f" -> {alert['hint']}" if alert.get("hint") else ""
        text = console_text or line + hint  # a caller's own console line (the seed's wording) is kept as is
        if console and getattr(trainer, "is_global_zero", True):  # one console line per alarm, not one per rank
            warn_on_console(log, text, prefix=prefix)
        else:
            log.warning("%s", line + hint)
        if trainer is not None:
            self._write(trainer)
            log_text(trainer, f"health/{alert['rule']}", f"**{alert['severity']}** {alert['message']}{hint}",
                     step=alert["step"])
            self._log_scalars(trainer, {"health/alerts": float(len(self.alerts)),
                                        f"health/{alert['rule']}": 1.0}, alert["step"])
            if alert["action"] == "stop" and not getattr(trainer, "sanity_checking", False):
                print(f"stopping: health rule '{alert['rule']}' has action: stop")
                trainer.should_stop = True

    def remind(self, message: str, prefix: str = "\n") -> None:
        """A repeat of an alarm already reported (console and train.log only, no new entry)."""
        warn_on_console(log, message, prefix=prefix)

    # -- hooks ------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        self._write(trainer)  # [] on a new run; a resumed run's alarms so far

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation has run by now (Lightning validates inside the training epoch): train and val metrics
        if trainer.sanity_checking:
            return
        record = epoch_record(trainer, self.prefixes)
        self.history = [r for r in self.history if r["epoch"] != record["epoch"]] + [record]
        before = set(self.monitor.active)
        for alert in self.monitor.evaluate(self.history):
            self.report(alert, trainer)
        if self.rules:
            ended = before - self.monitor.active
            self._log_scalars(trainer, {f"health/{r}": 0.0 for r in ended}, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"alerts": list(self.alerts), "history": list(self.history), "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.alerts = list(state_dict.get("alerts", []))
        self.history = list(state_dict.get("history", []))
        self.monitor.load_state_dict(state_dict.get("monitor", {}))


def find_sink(trainer: Any) -> RunHealth | None:
    """The trainer's RunHealth callback, if it has one."""
    return next((c for c in getattr(trainer, "callbacks", None) or [] if isinstance(c, RunHealth)), None)


def report_alert(trainer: Any, alert: dict[str, Any], console: bool = True, console_text: str | None = None,
                 prefix: str = "\n") -> None:
    """Send a per-batch or decision alarm to the run's sink; a trainer without one (a callback used on its
    own) still gets the console line, so the alarm is never lost."""
    sink = find_sink(trainer)
    if sink is not None:
        sink.report(alert, trainer, console=console, console_text=console_text, prefix=prefix)
        return
    text = console_text or alert["message"]
    if console:
        warn_on_console(log, text, prefix=prefix)
    else:
        log.warning("%s", text)
    if alert["action"] == "stop" and trainer is not None:
        trainer.should_stop = True


def remind(trainer: Any, message: str, prefix: str = "\n") -> None:
    """Repeat an alarm already reported, on the console and in train.log only."""
    sink = find_sink(trainer)
    if sink is not None:
        sink.remind(message, prefix=prefix)
    else:
        warn_on_console(log, message, prefix=prefix)


__all__ = ["RunHealth", "find_sink", "make_alert", "remind", "report_alert"]
