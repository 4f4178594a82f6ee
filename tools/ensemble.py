"""Ensemble trained runs: average their test probabilities per item and score the ensemble next to each run.

    python -m tools.ensemble outputs/sweeps/behavior_seeds/2026-01-01_10-00-00
    python -m tools.ensemble <run dir> <run dir> ... --out reports/ensemble

Each run's ``predictions_agg.csv`` (written after the final test, one row per item: ``item_id, group,
label, pred, score_<class>...`` then the task's columns) is read. The runs must be of the same task and
hold the same test items with the same labels; otherwise nothing is written and the runs that differ are
named (exit 2). The ensemble's probability of each class is the mean of the runs' ``score_<class>``;
its prediction is the positive class at the model's ``threshold`` (binary tasks) or the most probable
class. Heads that the rows give only as a prediction and its confidence (LEGO's colour when the part is
the primary head) are combined by a confidence-weighted vote. Every run and the ensemble are scored
with the same torchmetrics functions: binary tasks accuracy, precision/recall/F1 of the positive class,
ROC AUC and ECE (+ the TTA accuracy when the rows carry ``prob_<class>_tta``); multi-class tasks top-1,
top-5, macro accuracy and ECE (+ each voted head's accuracy).

Written as a unit into ``<sweep dir>/ensemble`` (or ``--out``): ``ensemble_predictions.csv``,
``ensemble_metrics.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.contracts import score_columns
from suite.errors import DataError, UserError, run_guarded
from suite.outputs import output_dir_arg, output_folder
from suite.run_dir import RunDir
from tools.compare import find_runs, is_run_dir

OUTPUT_KIND = "ensemble"
KEY_COLUMNS = ("item_id", "label")


@dataclass
class Member:
    """One run's test predictions."""

    path: Path
    name: str
    task: str
    threshold: float | None
    frame: Any  # pandas.DataFrame indexed by item_id


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------
def _config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    run = RunDir(path)
    if not run.config_yaml.is_file():
        return {}
    try:
        return OmegaConf.to_container(OmegaConf.load(run.config_yaml), resolve=False) or {}
    except Exception as err:  # yaml's scanner/parser errors
        raise DataError(f"{run.config_yaml} cannot be read: {type(err).__name__}") from None


def task_of(config: dict[str, Any]) -> str:
    """The task a run trained: its LightningModule class (experiments of one task share it), else task_name."""
    model = config.get("model")
    if isinstance(model, dict) and model.get("_target_"):
        return str(model["_target_"]).rsplit(".", 1)[-1]
    return str(config.get("task_name") or "?")


def _names(paths: list[Path]) -> list[str]:
    """Short, distinct names: the paths relative to their common folder (a sweep's job numbers)."""
    import os

    if len(paths) == 1:
        return [paths[0].name]
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return [str(p.relative_to(common)) or p.name for p in paths]


def load_member(path: Path, name: str) -> Member:
    import pandas as pd

    csv = RunDir(path).predictions_csv
    if not csv.is_file():
        raise DataError(f"run {name} ({path}) has no {csv.name}: it has not finished its test "
                        "(test_after_fit=true writes it); leave it out or finish it")
    try:
        frame = pd.read_csv(csv, dtype={"item_id": str, "label": str, "pred": str, "group": str},
                            keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{csv} cannot be read as a CSV: {err}") from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{csv}: no column {', '.join(missing)}; it is not a predictions file of this suite")
    repeated = frame["item_id"][frame["item_id"].duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"{csv}: item_id {', '.join(repeated[:5])} appears more than once; an ensemble needs "
                        "one row per item")
    config = _config(path)
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    threshold = model.get("threshold")
    return Member(path=path, name=name, task=task_of(config),
                  threshold=float(threshold) if isinstance(threshold, int | float) else None,
                  frame=frame.set_index("item_id", drop=False))


def load_members(paths: list[Path]) -> list[Member]:
    run_dirs = find_runs(paths)
    if len(run_dirs) < 2:
        where = ", ".join(map(str, paths))
        raise DataError(f"an ensemble needs at least 2 runs; found {len(run_dirs)} under {where}")
    return [load_member(p, n) for p, n in zip(run_dirs, _names(run_dirs), strict=True)]


def check_same_task(members: list[Member]) -> None:
    tasks: dict[str, list[str]] = {}
    for m in members:
        tasks.setdefault(m.task, []).append(m.name)
    if len(tasks) > 1:
        listed = "; ".join(f"{task}: {', '.join(names)}" for task, names in tasks.items())
        raise DataError(f"the runs are of different tasks ({listed}); ensemble runs of one task")


def check_same_items(members: list[Member]) -> None:
    """Same item ids and the same label per item as the first run; the differences are named."""
    ref = members[0]
    ref_items = set(ref.frame.index)
    for m in members[1:]:
        items = set(m.frame.index)
        if items != ref_items:
            only_ref, only_m = sorted(ref_items - items), sorted(items - ref_items)
            parts = []
            if only_ref:
                parts.append(f"{len(only_ref)} item(s) only in {ref.name} (e.g. {', '.join(only_ref[:3])})")
            if only_m:
                parts.append(f"{len(only_m)} item(s) only in {m.name} (e.g. {', '.join(only_m[:3])})")
            raise DataError(f"runs {ref.name} and {m.name} were tested on different items: {'; '.join(parts)}. "
                            "An ensemble needs the same test split (same data and split seed)")
        labels = m.frame["label"].reindex(ref.frame.index)
        differ = ref.frame.index[labels != ref.frame["label"]].tolist()
        if differ:
            raise DataError(f"runs {ref.name} and {m.name} label {len(differ)} test item(s) differently "
                            f"(e.g. {', '.join(differ[:3])}); an ensemble needs the same test data")


def check_scores(members: list[Member]) -> list[str]:
    """The class names of the ``score_<class>`` columns, the same in every run; refused when there are none."""
    classes = list(score_columns(members[0].frame.columns))
    if not classes:
        cols = ", ".join(c for c in members[0].frame.columns if c not in ("item_id", "group"))
        raise DataError(
            f"task {members[0].task}: the runs' predictions_agg.csv has no score_<class> columns (class "
            f"probabilities), only: {cols}. An ensemble averages probabilities per item; this task's rows "
            "carry none (segmentation rows hold per-image F1/IoU, the contrastive stage distances)")
    for m in members[1:]:
        other = list(score_columns(m.frame.columns))
        if other != classes:
            raise DataError(f"runs {members[0].name} and {m.name} score different classes "
                            f"({', '.join(classes)} vs {', '.join(other)}); an ensemble needs the same classes")
    return classes


def vote_heads(members: list[Member]) -> list[str]:
    """Heads given as ``<head>_true/_pred/_confidence`` other than the primary one (whose ``_pred`` is ``pred``)."""
    frame = members[0].frame
    heads = [c[: -len("_pred")] for c in frame.columns if c.endswith("_pred")]
    return [h for h in heads if {f"{h}_true", f"{h}_confidence"} <= set(frame.columns)
            and not all((m.frame[f"{h}_pred"] == m.frame["pred"]).all() for m in members)]


def tta_column(members: list[Member], classes: list[str]) -> str | None:
    """``prob_<positive>_tta`` of a binary task (violence's TTA probability), when every run has it."""
    if len(classes) != 2:
        return None
    name = f"prob_{classes[1]}_tta"
    return name if all(name in m.frame.columns for m in members) else None


# ---------------------------------------------------------------------------------------------
# Combining and scoring
# ---------------------------------------------------------------------------------------------
def _probs(member: Member, classes: list[str], index: Any) -> Any:
    import numpy as np

    cols = [f"score_{c}" for c in classes]
    values = member.frame.loc[index, cols].apply(lambda s: s.astype(float)).to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"run {member.name}: predictions_agg.csv has empty or non-numeric scores")
    return values


def predict(probs: Any, classes: list[str], threshold: float | None) -> list[str]:
    """Binary: the positive class (index 1) at ``threshold`` (0.5 when the model has none); else argmax."""
    if len(classes) == 2:
        t = 0.5 if threshold is None else threshold
        return [classes[int(p >= t)] for p in probs[:, 1]]
    return [classes[i] for i in probs.argmax(1)]


def vote(members: list[Member], head: str, index: Any) -> list[str]:
    """Confidence-weighted vote of the runs' ``<head>_pred`` (the rows hold no per-class probabilities
    of this head to average); a tie goes to the class the first run named among the tied."""
    import pandas as pd

    totals = pd.DataFrame(0.0, index=index, columns=[])
    order: dict[str, list[str]] = {i: [] for i in index}
    for m in members:
        preds = m.frame.loc[index, f"{head}_pred"].astype(str)
        conf = pd.to_numeric(m.frame.loc[index, f"{head}_confidence"], errors="coerce").fillna(0.0)
        for item, p, c in zip(index, preds, conf, strict=True):
            if p not in totals.columns:
                totals[p] = 0.0
            totals.at[item, p] += float(c)
            order[item].append(p)
    winners = []
    for item in index:
        row = totals.loc[item]
        best = row.max()
        winners.append(next(p for p in order[item] if row[p] == best))
    return winners


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def score(probs: Any, labels: list[str], classes: list[str], threshold: float | None) -> dict[str, float | None]:
    """The task's main metrics of ``probs`` [N, C] against ``labels`` (items with an unknown label skipped)."""
    import torch
    from torchmetrics.functional import classification as tmc

    known = [i for i, label in enumerate(labels) if label in classes]
    if not known:
        return {}
    p = torch.tensor(probs[known], dtype=torch.float32)
    target = torch.tensor([classes.index(labels[i]) for i in known])
    if len(classes) == 2:
        pos, t = classes[1], 0.5 if threshold is None else threshold
        prob = p[:, 1].contiguous()
        # hard predictions as the modules make them (p >= threshold; torchmetrics' own threshold is p > t)
        hard = (prob >= t).long()
        out = {
            "accuracy": tmc.binary_accuracy(hard, target),
            f"precision_{pos}": tmc.binary_precision(hard, target),
            f"recall_{pos}": tmc.binary_recall(hard, target),
            f"f1_{pos}": tmc.binary_f1_score(hard, target),
            # ROC AUC is undefined when the test items hold one class only
            "auroc": tmc.binary_auroc(prob, target) if target.unique().numel() == 2 else float("nan"),
            "ece": tmc.binary_calibration_error(prob, target, n_bins=10),
        }
    else:
        n = len(classes)
        out = {
            "top1": tmc.multiclass_accuracy(p, target, num_classes=n, top_k=1, average="micro"),
            f"top{min(5, n)}": tmc.multiclass_accuracy(p, target, num_classes=n, top_k=min(5, n), average="micro"),
            "macro_accuracy": tmc.multiclass_accuracy(p, target, num_classes=n, average="macro"),
            "ece": tmc.multiclass_calibration_error(p, target, num_classes=n, n_bins=10),
        }
    return {k: _num(v) for k, v in out.items()}


def _accuracy(preds: list[str], truth: list[str]) -> float | None:
    pairs = [(p, t) for p, t in zip(preds, truth, strict=True) if t != ""]
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else None


def build_ensemble(paths: list[Path]) -> dict[str, Any]:
    """Read and check the runs, average them and score every run and the ensemble (nothing is written)."""
    import numpy as np
    import pandas as pd

    members = load_members(paths)
    check_same_task(members)
    check_same_items(members)
    classes = check_scores(members)
    heads, tta = vote_heads(members), tta_column(members, classes)
    thresholds = {m.threshold for m in members}
    threshold = members[0].threshold
    if len(thresholds) > 1:
        print(f"warning: the runs' model.threshold differ ({sorted(thresholds, key=str)}); the ensemble uses "
              f"{threshold} (run {members[0].name})", file=sys.stderr)
    ref = members[0].frame
    index = list(ref.index)
    labels = ref["label"].astype(str).tolist()

    member_probs = [_probs(m, classes, index) for m in members]
    mean = np.mean(member_probs, axis=0)
    ensemble_pred = predict(mean, classes, threshold)

    def extra_metrics(pred_of_head: dict[str, list[str]], tta_prob: Any) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for head in heads:
            out[f"{head}_accuracy"] = _accuracy(pred_of_head[head], ref[f"{head}_true"].astype(str).tolist())
        if tta is not None:
            tta_pred = [classes[int(p >= 0.5)] for p in tta_prob]
            out["tta_accuracy"] = _accuracy(tta_pred, [lab if lab in classes else "" for lab in labels])
        return out

    def tta_of(m: Member) -> Any:
        return pd.to_numeric(m.frame.loc[index, tta], errors="coerce").to_numpy(dtype=float) if tta else None

    scores: dict[str, dict[str, float | None]] = {}
    for m, probs in zip(members, member_probs, strict=True):
        scores[m.name] = {**score(probs, labels, classes, m.threshold),
                          **extra_metrics({h: m.frame.loc[index, f"{h}_pred"].astype(str).tolist() for h in heads},
                                          tta_of(m))}
    voted = {h: vote(members, h, index) for h in heads}
    tta_mean = np.mean([tta_of(m) for m in members], axis=0) if tta else None
    ensemble_scores = {**score(mean, labels, classes, threshold), **extra_metrics(voted, tta_mean)}
    metric_names = list(ensemble_scores)
    member_mean = {k: _num(np.mean([s[k] for s in scores.values()])) if all(
        s.get(k) is not None for s in scores.values()) else None for k in metric_names}

    table = pd.DataFrame({"item_id": index, "group": ref["group"].tolist() if "group" in ref else "",
                          "label": labels, "pred": ensemble_pred})
    for j, c in enumerate(classes):
        table[f"score_{c}"] = np.round(mean[:, j], 6)
    preds = [predict(p, classes, m.threshold) for m, p in zip(members, member_probs, strict=True)]
    table["agreement"] = np.round(np.mean([[a == b for a, b in zip(p, ensemble_pred, strict=True)]
                                           for p in preds], axis=0), 4)
    for head in heads:
        table[f"{head}_true"] = ref[f"{head}_true"].tolist()
        table[f"{head}_pred"] = voted[head]
    if tta is not None:
        table[tta] = np.round(tta_mean, 6)
    for m, p, pr in zip(members, member_probs, preds, strict=True):
        if len(classes) == 2:
            table[f"score_{classes[1]}@{m.name}"] = np.round(p[:, 1], 6)
        table[f"pred@{m.name}"] = pr
    return {
        "task": members[0].task, "classes": classes, "items": len(index),
        "runs": {m.name: str(m.path) for m in members},
        "method": "mean of the runs' class probabilities" + (
            f"; {', '.join(heads)}: confidence-weighted vote" if heads else ""),
        "threshold": threshold if len(classes) == 2 else None,
        "metrics": metric_names, "members": scores, "mean_of_members": member_mean, "ensemble": ensemble_scores,
        "table": table,
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def default_out(paths: list[Path]) -> Path:
    """``<sweep dir>/ensemble`` for one sweep dir; else ``ensemble`` in the folder that holds the given paths."""
    import os

    if len(paths) == 1 and not is_run_dir(paths[0]):
        return paths[0] / "ensemble"
    return Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) / "ensemble"


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['task']}: ensemble of {len(result['members'])} runs on {result['items']} test items")
    table.add_column("run")
    for name in result["metrics"]:
        table.add_column(name, justify="right")

    def cells(values: dict[str, float | None]) -> list[str]:
        return ["-" if values.get(k) is None else f"{values[k]:.4f}" for k in result["metrics"]]

    for name, values in result["members"].items():
        table.add_row(name, *cells(values))
    table.add_row("mean of runs", *cells(result["mean_of_members"]), style="dim")
    table.add_row("ensemble", *cells(result["ensemble"]), style="bold")
    Console().print(table)


def write_ensemble(result: dict[str, Any], out: Path) -> Path:
    from suite.io import atomic_write_csv, atomic_write_json

    with output_folder(out, OUTPUT_KIND, option="--out", replace=True,
                       record={"runs": list(result["runs"].values())}) as folder:
        atomic_write_csv(folder / "ensemble_predictions.csv", result["table"].to_dict(orient="records"))
        atomic_write_json(folder / "ensemble_metrics.json", {k: v for k, v in result.items() if k != "table"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ensemble",
        description="Average the test probabilities of several runs of one task (a sweep's seeds) per item and "
                    "score the ensemble next to each run: ensemble_predictions.csv, ensemble_metrics.json.")
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep dir, or several run dirs / sweep dirs")
    parser.add_argument("--out", type=output_dir_arg, default=None,
                        help="output folder (default: <sweep dir>/ensemble, or ensemble/ beside the runs)")
    args = parser.parse_args(argv)
    try:
        result = build_ensemble(args.paths)
        out = write_ensemble(result, args.out or default_out(args.paths))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(result)
    print(f"written: {out}/ensemble_predictions.csv, ensemble_metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback
