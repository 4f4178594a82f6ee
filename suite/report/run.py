"""What a report reads from a finished run dir, read once and torch-free.

Every file is optional except the final metrics (a run without ``metrics/metrics.json`` did not
finish): a section whose file is missing says so instead of failing the whole report.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from suite.errors import DataError
from suite.run_dir import RunDir

ALERTS_NAME = "alerts.json"


def _json(path: Path) -> Any:
    """The parsed file, None when absent; a file that cannot be parsed is a DataError naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read as JSON ({type(err).__name__}: {err}); "
                        "fix or delete it and write the report again") from None


@dataclass
class RunFacts:
    """The run dir's files, parsed: the sections read only this."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] | None = None  # None: no alerts.json (the run was not watched)
    predictions: pd.DataFrame | None = None
    label_map: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # manifests_used.txt's paths, in order

    @property
    def task(self) -> str:
        """The task (the module's package: ``lightning_modules.<task>.``), else the config's ``task_name``."""
        target = str((self.config.get("model") or {}).get("_target_") or "")
        parts = target.split(".")
        if len(parts) >= 3 and parts[0] == "lightning_modules":
            return parts[1]
        return str(self.config.get("task_name") or "?")

    @property
    def selection_metric(self) -> str | None:
        metric = self.config.get("selection_metric")
        return str(metric) if metric else None

    def _source_dirs(self) -> list[Path]:
        """The folders the run read data from (manifests_used.txt), feature caches left out."""
        cache = (self.config.get("paths") or {}).get("cache_dir")
        dirs = []
        for source in self.sources:
            path = Path(source)
            if cache and path.is_relative_to(Path(str(cache))):
                continue
            folder = path if path.is_dir() else path.parent if path.suffix else None
            if folder is not None and folder.is_dir():
                dirs.append(folder)
        return list(dict.fromkeys(dirs))

    @property
    def data_root(self) -> Path | None:
        """``data.root``, else the folder holding every source the run read (a synthetic run's generated folder)."""
        data = self.config.get("data") or {}
        if data.get("root"):
            return Path(str(data["root"]))
        dirs = self._source_dirs()
        if not dirs:
            return None
        return Path(os.path.commonpath([str(d) for d in dirs]))

    def resolve_item(self, item_id: str) -> Path | None:
        """The file of a prediction's ``item_id`` (a path relative to the data root or to a source folder)."""
        given = Path(item_id)
        if given.is_absolute():
            return given if given.exists() else None
        bases = [self.data_root] if self.data_root else []
        for folder in self._source_dirs():
            bases += [folder, folder.parent]
        for base in dict.fromkeys(bases):
            if (base / given).is_file():
                return base / given
        return None

    @property
    def experiment(self) -> str:
        """The experiment name: ``experiment=`` of the launch overrides, else the config's ``experiment_name``."""
        for item in RunDir(self.path).launch_overrides() if (self.path / ".hydra" / "overrides.yaml").is_file() else []:
            key, _, value = item.partition("=")
            if key.lstrip("+~") == "experiment":
                return value
        return str(self.config.get("task_name") or "?")  # the experiments set task_name to their own name


def _sources(path: Path) -> list[str]:
    """Paths named in manifests_used.txt (tab-separated ``path<TAB>rows``; a path may carry a ``split:`` prefix
    and a parenthesised note, as behavior writes it)."""
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines()[1:]:
        text = line.split("\t")[0]
        text = re.sub(r"^\w+: ", "", text).split(" (")[0].strip()
        if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text) or "/" in text:
            found.append(text)
    return found


def load_run(path: str | Path) -> RunFacts:
    """The facts of a finished run; DataError naming the folder when it is not one."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise DataError(f"{run.path} is not a run directory: the folder does not exist")
    if not run.is_finished:
        raise DataError(f"{run.path} is not a finished training run: {run.metrics_json} is missing "
                        "(a run writes it after its final test; train the run to the end first)")
    metrics = run.metrics() or {}
    config: dict[str, Any] = {}
    if run.config_yaml.is_file():
        try:
            config = yaml.safe_load(run.config_yaml.read_text()) or {}
        except yaml.YAMLError as err:
            raise DataError(f"{run.config_yaml} cannot be read as YAML: {' '.join(str(err).split())[:200]}") from None
    history = _json(run.history_json) or []
    alerts = _json(run.path / ALERTS_NAME)
    if alerts is not None and not isinstance(alerts, list):
        raise DataError(f"{run.path / ALERTS_NAME} is not a list of alarms")
    predictions = None
    if run.predictions_csv.is_file():
        try:
            # ids stay text ('007' is not 7); numbers are parsed per column below
            predictions = pd.read_csv(run.predictions_csv, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise DataError(f"{run.predictions_csv} cannot be read as CSV: {err}") from None
    return RunFacts(path=run.path, config=config if isinstance(config, dict) else {}, metrics=metrics,
                    history=history if isinstance(history, list) else [], alerts=alerts, predictions=predictions,
                    label_map=_json(run.label_map_json) or {}, sources=_sources(run.manifests_txt))


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A text column of predictions_agg.csv as floats (empty cells: NaN)."""
    return pd.to_numeric(frame[column], errors="coerce")
