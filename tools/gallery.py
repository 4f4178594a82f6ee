"""The failure gallery: each seed's failure next to its fix, on the synthetic data, and what the suite said.

    python -m tools.gallery [--out gallery] [--only 001,002] [--quick] [--runs outputs/gallery_runs]

For each pair (seeds 000-004) it trains the failure and the fix one after the other (``train.py`` in a
subprocess: model.pretrained=false, no ONNX export, small synthetic sizes, few epochs), then reads each
run's ``alerts.json``, ``metrics/metrics.json`` and ``training_history.json`` and writes, as one folder:

- ``<pair>.png``: the metric that shows the failure, failure vs fix per epoch, the alarms marked;
- ``README.md``: the table failure | figure that shows it | alarm that fired | figure of the fix | alarms on
  the fix, with the commands and the wall time of every run;
- ``results.json``: the same facts as data.

A failure the synthetic data does not reproduce (no alarm of its rules fired) is written as
"not reproduced" with the reason, never tuned until it fires. The runs themselves stay under ``--runs``
(checkpoints are large; the gallery keeps only what it shows).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.outputs import output_dir_arg, output_folder

ROOT = Path(__file__).resolve().parents[1]
KIND = "failure gallery"

# every run: no hub, no export, CSV logs only (TensorBoard event files are not read here), no loader worker
# processes (with a few batches per epoch they cost more than they save on a small CPU)
COMMON = ("model.pretrained=false", "callbacks.onnx_export.enabled=false", "logger=csv", "trainer.accelerator=cpu",
          "data.num_workers=0")
# a training that takes longer than this is stopped and written as failed, so one hang does not stall the gallery
RUN_TIMEOUT_S = 900
# --quick: a wiring check of the gallery itself (debug=fast's two batches of two items, two epochs so the
# history has a trend), not a reproduction; after the pair's settings, so its batch size and epochs win
QUICK = ("debug=fast", "trainer.max_epochs=2", "data.batch_size=2")


@dataclass(frozen=True)
class Side:
    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Pair:
    """One seed's failure and its fix, and how to read them."""

    id: str
    title: str
    failure: Side
    fix: Side
    metric: str  # history key (or glob) that shows the failure
    rules: tuple[str, ...]  # alarms that flag the failure
    why_not: str  # what the synthetic data lacks when none of ``rules`` fires on the failure
    gap: bool = False  # ``metric`` is a glob: the figure is max - min over the matching keys
    plot: tuple[str, ...] = ()  # extra history keys drawn in a second panel
    confound: bool = False  # run tools.check_confound on both runs (behavior)
    common: tuple[str, ...] = field(default=())


PAIRS: tuple[Pair, ...] = (
    Pair(
        "000", "relevance: 32x32 head, IoU stuck at 0",
        Side("coarse 32x32 head", ("model.net.head_size=32",)),
        Side("full-resolution decoder", ("model.net.head_size=null",)),
        metric="val/iou", rules=("iou_zero_loss_falling",), plot=("train/loss",),
        why_not="the synthetic moving objects cover many 32x32 cells, so the upsampled coarse head still "
                "overlaps them; the seed's IoU 0 came from small regions on 224x224 factory frames",
        # the 160x120 frames at 160 px rather than upsampled to 224: half the pixels, and the head's
        # 32x32 cells cover the same part of the frame (width / 32) at any input size
        common=("experiment=relevance_segmentation", "data.image_size=160", "trainer.max_epochs=5"),
    ),
    Pair(
        "001", "violence: failed config (class gap, one class)",
        Side("violence_failed", ("experiment=violence_failed",)),
        Side("violence_optimal", ("experiment=violence_optimal",)),
        metric="val/class_gap",
        rules=("class_gap_warning", "class_gap_critical", "class_stuck", "violent_plateau", "violent_dropping",
               "one_class_only", "val_accuracy_oscillating", "early_decision"),
        plot=("val/acc_violent", "val/acc_non_violent"),
        why_not="the synthetic clips (fast colliding vs slowly drifting blobs) are separable enough that the "
                "failed configuration learns both classes within the epochs run",
        common=("trainer.max_epochs=8",),
    ),
    Pair(
        "002", "segmentation: BCE alone, loss to 0 / collapse",
        Side("BCE alone", ("model.loss.bce_weight=1", "model.loss.dice_weight=0", "model.loss.focal_weight=0")),
        Side("BCE + Dice + Focal", ()),
        metric="val/f1", rules=("prediction_collapse", "loss_zero_f1_low", "f1_stuck_at_zero"),
        plot=("train/loss",),
        why_not="on masks of 1-2 % foreground BCE alone predicts background everywhere (val F1 0 at every epoch) "
                "while its loss falls slowly (0.64 to 0.48 in 6 epochs), so f1_stuck_at_zero should fire; "
                "loss_zero_f1_low and prediction_collapse cannot (the loss stays far above 0.01, the mean "
                "predicted probability far above 0.001)",
        # sparse masks (1-2 % of each image, a few small objects) as in the seed's collapse; batches of 4 for
        # more steps per epoch: at 64 px a step costs little beside the run's start and its test
        common=("experiment=segmentation", "data.synthetic_images=80", "data.synthetic_size=64",
                "data.synthetic_foreground=[0.01,0.02]", "data.batch_size=4", "model.log_images=0",
                "trainer.max_epochs=6"),
    ),
    Pair(
        "003", "behavior: old split, scores by video",
        Side("baseline_old_split", ("experiment=baseline_old_split",)),
        Side("intravideo split", ("experiment=intravideo",)),
        metric="val/tail_recall", rules=("train_far_below_val", "tail_recall_plateau"),
        plot=("train/loss", "val/loss"), confound=True,
        why_not="in the few epochs run the small model neither memorises the training videos (train loss "
                "under half the val loss) nor plateaus for 5 epochs",
        common=("trainer.max_epochs=6",),
    ),
    Pair(
        "004", "lego: renders only vs real-weighted, per source",
        Side("renders only (real weight 0)", ("data.source_weights.real=0",)),
        Side("real-weighted (real 3x)", ("data.source_weights.real=3",)),
        metric="val/part_acc/*", gap=True, rules=("source_gap",),
        why_not="in 4 epochs from random weights the renders-only model still predicts one part for every "
                "validation image (each source's accuracy is its share of that part, flat), so no source is "
                "learned to the 0.5 that source_gap needs",
        # every source is validated, so the per-source part accuracy shows the gap; 20 real captures per part
        # (not 40) and batches of 32 halve an epoch and keep 10 steps in it; from random weights the seed's
        # lr 1e-4 with 3 warm-up epochs (meant for ImageNet weights) learns little in 4 epochs: lr 1e-3,
        # one warm-up epoch, the same on both sides
        common=("experiment=lego_part", "data.eval_sources=[real,legacy,b200c]", "data.synthetic_real_captures=20",
                "data.batch_size=32", "model.optimizer.lr=1e-3", "model.scheduler.warmup_epochs=1",
                "trainer.max_epochs=4"),
    ),
)
PAIR_IDS = tuple(p.id for p in PAIRS)


# -- reading a finished run ------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunFacts:
    """What the gallery reads from one run dir (None = the file is missing)."""

    path: Path
    alerts: list[dict[str, Any]] | None
    metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    error: str | None = None
    wall_s: float | None = None
    confound: str | None = None

    @classmethod
    def read(cls, path: Path, error: str | None = None, wall_s: float | None = None) -> RunFacts:
        alerts = _read_json(path / "alerts.json")
        history = _read_json(path / "training_history.json")
        return cls(path, alerts if isinstance(alerts, list) else None,
                   _read_json(path / "metrics" / "metrics.json"), history if isinstance(history, list) else [],
                   error, wall_s)

    def rules_fired(self) -> list[str]:
        seen: list[str] = []
        for alert in self.alerts or []:
            if alert.get("rule") not in seen:
                seen.append(alert.get("rule"))
        return seen

    def series(self, pattern: str) -> dict[str, list[tuple[int, float]]]:
        """Per history key matching ``pattern``: (epoch, value) of every epoch that logged it."""
        out: dict[str, list[tuple[int, float]]] = {}
        for i, record in enumerate(self.history):
            for key, value in record.items():
                if fnmatch.fnmatchcase(key, pattern) and isinstance(value, (int, float)):
                    out.setdefault(key, []).append((int(record.get("epoch", i)), float(value)))
        return out


def headline(pair: Pair, run: RunFacts) -> float | None:
    """The pair's figure on ``run`` at its last epoch: the metric, or for a gap the max - min over sources."""
    series = run.series(pair.metric)
    if not series:
        return None
    last = {key: values[-1][1] for key, values in series.items()}
    if pair.gap:
        return max(last.values()) - min(last.values()) if len(last) > 1 else None
    return next(iter(last.values()))


def _figure_text(pair: Pair, run: RunFacts) -> str:
    if run.error:
        return f"run failed: {run.error}"
    value = headline(pair, run)
    name = f"gap of {pair.metric}" if pair.gap else pair.metric
    text = f"{name} = {value:.3f} (last epoch)" if value is not None else f"{name}: not logged"
    if run.confound:
        text += f"; check_confound: {run.confound}"
    return text


def _alarm_list(run: RunFacts, rules: Iterable[str]) -> list[str]:
    wanted = set(rules)
    out = []
    for alert in run.alerts or []:
        if alert.get("rule") in wanted:
            where = f"epoch {alert['epoch']}" if alert.get("epoch") is not None else f"batch {alert.get('batch')}"
            out.append(f"`{alert['rule']}` ({alert.get('severity')}, {where})")
    return out


def pair_row(pair: Pair, failure: RunFacts, fix: RunFacts) -> dict[str, Any]:
    """One table row and its verdicts: reproduced (a rule of the pair fired on the failure), quiet (none on the fix)."""
    fired = _alarm_list(failure, pair.rules)
    on_fix = _alarm_list(fix, pair.rules)
    others = [r for r in fix.rules_fired() if r not in pair.rules]
    if failure.error:
        alarm = "none (the run failed)"
    elif failure.alerts is None:
        alarm = "not watched (no alerts.json)"
    elif fired:
        alarm = ", ".join(fired)
    else:
        alarm = f"none: not reproduced ({pair.why_not})"
    if fix.error:
        fix_alarms = "none (the run failed)"
    elif fix.alerts is None:
        fix_alarms = "not watched (no alerts.json)"
    else:
        fix_alarms = ", ".join(on_fix) if on_fix else "none of the pair's alarms"
        if others:
            fix_alarms += f"; other alarms: {', '.join(others)}"
    return {
        "pair": pair.id, "failure": f"{pair.id} {pair.title}: {pair.failure.label}", "fix": pair.fix.label,
        "failure_figure": _figure_text(pair, failure), "alarm": alarm,
        "fix_figure": _figure_text(pair, fix), "fix_alarms": fix_alarms,
        "reproduced": bool(fired), "fix_quiet": fix.alerts is not None and not on_fix and not fix.error,
        "failure_value": headline(pair, failure), "fix_value": headline(pair, fix),
        "failure_run": failure.path.name, "fix_run": fix.path.name,
        "wall_s": {"failure": failure.wall_s, "fix": fix.wall_s},
    }


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The gallery table (markdown) of :func:`pair_row` rows."""
    header = ("failure", "figure that shows it (value)", "alarm that fired", "figure of the fix (value)",
              "alarms on the fix")
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [row["failure"], row["failure_figure"], row["alarm"], f"{row['fix']}: {row['fix_figure']}",
                 row["fix_alarms"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# -- figures ---------------------------------------------------------------------------------------
def draw_pair(pair: Pair, failure: RunFacts, fix: RunFacts, path: Path) -> None:
    """Failure vs fix per epoch for the pair's metric (and its extra keys), the failure's alarms marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [pair.metric, *pair.plot]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, pattern in zip(axes[0], panels, strict=True):
        for run, colour, style, label in ((failure, "tab:red", "-", pair.failure.label),
                                          (fix, "tab:green", "--", pair.fix.label)):
            for key, values in sorted(run.series(pattern).items()):
                epochs, ys = zip(*values, strict=True)
                name = f"{label}: {key.rsplit('/', 1)[-1]}" if pair.gap else label
                ax.plot(epochs, ys, style, color=colour, marker="o", ms=3, label=name,
                        alpha=1.0 if not pair.gap else 0.5 + 0.5 * ("real" in key))
        for alert in failure.alerts or []:
            if alert.get("rule") in pair.rules and alert.get("epoch") is not None:
                ax.axvline(alert["epoch"], color="tab:red", alpha=0.3, lw=4)
                ax.annotate(alert["rule"], (alert["epoch"], 1.0), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=7, color="darkred")
        ax.set_title(pattern, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{pair.id} {pair.title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- running ---------------------------------------------------------------------------------------
def train_command(pair: Pair, side: Side, run_dir: Path, data_dir: Path, quick: bool) -> list[str]:
    """``train.py`` with the pair's settings; the synthetic data in the gallery's own data folder, so the
    default ``data/synthetic`` of other runs is never regenerated with these sizes."""
    return [sys.executable, "train.py", *COMMON, *pair.common, *side.overrides, *(QUICK if quick else ()),
            f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]


def _train(command: list[str], run_dir: Path, timeout_s: float = RUN_TIMEOUT_S) -> tuple[str | None, float]:
    start = time.perf_counter()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        try:
            proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"stopped after {timeout_s:.0f} s (see {run_dir.name}.log)", time.perf_counter() - start
    wall = time.perf_counter() - start
    if proc.returncode == 0:
        return None, wall
    tail = (run_dir.parent / f"{run_dir.name}.log").read_text(errors="replace").strip().splitlines()[-1:]
    return f"exit {proc.returncode}: {tail[0][:200] if tail else ''}", wall


def confound_verdict(run_dir: Path) -> str:
    """tools.check_confound's verdict on a behavior run's test predictions; the train/val videos are the
    split's groups in ``splits.json`` (a manifest may hold every split in one file)."""
    import pandas as pd

    from tools.check_confound import confound_report

    try:
        groups = json.loads((run_dir / "splits.json").read_text())["groups"]
        train, val = (pd.DataFrame({"video_id": [str(v) for v in groups[split]]}) for split in ("train", "val"))
        predictions = pd.read_csv(run_dir / "predictions_agg.csv", dtype={"video_id": str})
        return str(confound_report(train, val, predictions)["verdict"])
    except (OSError, KeyError, TypeError, ValueError) as err:
        return f"not available ({type(err).__name__}: {err})"


def select_pairs(only: str | None) -> list[Pair]:
    """``--only 001,002`` -> those pairs (in gallery order); None -> all. An unknown id is a UserError."""
    if not only:
        return list(PAIRS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in PAIR_IDS]
    if unknown or not wanted:
        raise UserError(f"--only: unknown pair(s) {unknown or [only]}; choose among {','.join(PAIR_IDS)}")
    return [p for p in PAIRS if p.id in wanted]


def _record_path(runs: Path, pair: Pair, tag: str) -> Path:
    return runs / f"{pair.id}-{tag}.gallery.json"


def run_pair(pair: Pair, runs: Path, quick: bool) -> tuple[RunFacts, RunFacts, list[list[str]]]:
    """Train the pair's failure then its fix; each run's command, wall time and error are kept next to it
    (``<runs>/<pair>-<side>.gallery.json``) so that ``--rebuild`` can redraw the gallery without training."""
    for tag, side in (("failure", pair.failure), ("fix", pair.fix)):
        run_dir = runs / f"{pair.id}-{tag}"
        command = train_command(pair, side, run_dir, runs / "data", quick)
        print(f"[{pair.id} {tag}] {side.label} ...", flush=True)
        error, wall = _train(command, run_dir)
        _record_path(runs, pair, tag).write_text(json.dumps({"command": command, "wall_s": wall, "error": error}))
        print(f"[{pair.id} {tag}] {wall:.0f} s, alarms: {', '.join(RunFacts.read(run_dir).rules_fired()) or 'none'}"
              + (f" ({error})" if error else ""), flush=True)
    return read_pair(pair, runs)


def read_pair(pair: Pair, runs: Path) -> tuple[RunFacts, RunFacts, list[list[str]]]:
    """The pair's two run dirs under ``runs`` as the gallery reads them (a missing run reads as failed)."""
    facts, commands = [], []
    for tag in ("failure", "fix"):
        run_dir = runs / f"{pair.id}-{tag}"
        record = _read_json(_record_path(runs, pair, tag)) or {}
        error = record.get("error") or (None if run_dir.is_dir() else f"no run dir {run_dir.name}")
        run = RunFacts.read(run_dir, error, record.get("wall_s"))
        if pair.confound and not error:
            run.confound = confound_verdict(run_dir)
        facts.append(run)
        commands.append(record.get("command") or ["python", "-"])
    return facts[0], facts[1], commands


def write_gallery(folder: Path, results: Sequence[tuple[Pair, RunFacts, RunFacts, list[list[str]]]],
                  quick: bool, runs: Path, total_s: float) -> None:
    """``README.md``, ``results.json`` and ``<pair>.png`` of finished runs into ``folder``."""
    rows = []
    for pair, failure, fix, _ in results:
        draw_pair(pair, failure, fix, folder / f"{pair.id}.png")
        rows.append(pair_row(pair, failure, fix))
    # commands as a user would type them: the runs folder named <runs>, not this machine's path
    commands = {f"{p.id}-{tag}": " ".join(c[1:]).replace(str(runs), "<runs>")
                for p, _, _, cs in results for tag, c in zip(("failure", "fix"), cs, strict=True)}
    lines = ["# Failure gallery", "",
             "Each seed's failure next to its fix, trained on the synthetic data; the alarm column is what the run "
             "health rules (docs/run_health.md) wrote to the run's alerts.json.",
             "" if not quick else "\n**--quick: two batches per epoch, a wiring check, not a reproduction.**", "",
             table_markdown(rows), ""]
    for row in rows:
        lines.append(f"![{row['pair']}]({row['pair']}.png)")
    lines += ["", "## Runs", "", "Wall time per run, measured on a shared CPU (under load); total "
              f"{total_s / 60:.1f} min.", "", "| run | wall (s) | command |", "| --- | --- | --- |"]
    for row in rows:
        for tag in ("failure", "fix"):
            name, wall = f"{row['pair']}-{tag}", row["wall_s"][tag]
            lines.append(f"| {name} | {wall:.0f} | `python {commands[name]}` |" if wall is not None
                         else f"| {name} | - | - |")
    (folder / "README.md").write_text("\n".join(lines) + "\n")
    (folder / "results.json").write_text(json.dumps({"quick": quick, "total_s": total_s, "rows": rows},
                                                    indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=output_dir_arg, default=Path("gallery"), help="gallery folder (default gallery)")
    parser.add_argument("--only", default=None, help=f"comma-separated pairs among {','.join(PAIR_IDS)}")
    parser.add_argument("--quick", action="store_true", help="two batches per epoch: checks the wiring only")
    parser.add_argument("--runs", type=output_dir_arg, default=None,
                        help="where the trainings go (default outputs/gallery_runs/<time>)")
    parser.add_argument("--rebuild", action="store_true",
                        help="train nothing: redraw the gallery from the runs already in --runs")
    args = parser.parse_args(argv)
    pairs = select_pairs(args.only)
    if args.rebuild and (args.runs is None or not Path(args.runs).is_dir()):
        raise UserError("--rebuild: give --runs, the folder of an earlier gallery's trainings")
    runs = Path(args.runs or Path("outputs") / "gallery_runs" / time.strftime("%Y%m%d-%H%M%S")).absolute()
    with output_folder(args.out, KIND, option="--out", replace=True,
                       record={"pairs": [p.id for p in pairs], "quick": args.quick, "runs": str(runs)}) as folder:
        start = time.perf_counter()
        results = [(pair, *(read_pair(pair, runs) if args.rebuild else run_pair(pair, runs, args.quick)))
                   for pair in pairs]
        total = time.perf_counter() - start
        if args.rebuild:
            total = sum(r.wall_s or 0.0 for _, fail, fix, _ in results for r in (fail, fix))
        write_gallery(folder, results, args.quick, runs, total)
    print(f"wrote {args.out}/README.md ({len(pairs)} pairs; runs in {runs})")
    return 0


if __name__ == "__main__":
    from suite.errors import run_guarded

    sys.exit(run_guarded(main))
