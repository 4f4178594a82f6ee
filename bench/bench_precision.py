"""Per task: median training step time in fp32, bf16-mixed and bf16-mixed + model.compile on the CPU, and the
final validation metric of a short same-seed run in fp32 and in bf16-mixed.

    python bench/bench_precision.py                              # every task; the compile runs take longest
    python bench/bench_precision.py --tasks segmentation,lego --epochs 2 --no-compile
    python bench/bench_precision.py --out precision.json         # the figures as JSON too

Each figure comes from ``python train.py experiment=<preset> trainer=cpu|cpu_bf16 [model.compile=true]`` on the
task's synthetic data (generated once per task), ``model.pretrained=false``, with the preset's batch size and
``torch`` threads = cores (batches loaded in the main process, ``data.num_workers=0``, so no loader shares the
cores): the step time is the median of the training steps (the batch already loaded, so data loading is not counted;
the optimizer step is), the compile time is what the first steps of the compiled run take beyond that median. The
metric is the experiment's selection metric after the last epoch (runs of a few limited epochs on small data: it
says whether bf16 keeps up with fp32, not what the task reaches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

ROOT = Path(__file__).resolve().parents[1]

# task -> the experiment and the overrides that keep its synthetic data small
TASKS: dict[str, list[str]] = {
    "segmentation": ["experiment=segmentation", "data.synthetic_images=64", "model.log_images=0"],
    "violence": ["experiment=violence_optimal"],
    "behavior": ["experiment=intravideo"],
    "relevance_contrastive": ["experiment=relevance_contrastive", "model.log_images=0"],
    "relevance_segmentation": ["experiment=relevance_segmentation", "model.log_images=0",
                               "model.comparison_events=0"],
    "lego": ["experiment=lego_multitask"],
}
VARIANTS = {"fp32": ["trainer=cpu"], "bf16": ["trainer=cpu_bf16"],
            "compile": ["trainer=cpu_bf16", "model.compile=true"]}
# the first steps of a compiled run compile (train mode forward and backward); later ones are timed
COMPILE_WARMUP = 2


class StepTimer(L.Callback):
    """Wall time of every training step (forward, backward, optimizer step) into the JSON file ``out``."""

    def __init__(self, out: str):
        self.out = out
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(self.out).write_text(json.dumps(self.times))


def run_variant(task: str, variant: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``train.py`` run; returns its step times (s) and its final validation metrics."""
    run_dir = work / f"{task}_{variant}"
    times = work / f"{task}_{variant}_steps.json"
    if variant == "compile":  # step times only: one epoch, no validation
        schedule = ["trainer.max_epochs=1", f"++trainer.limit_train_batches={args.batches}",
                    "++trainer.limit_val_batches=0"]
    else:
        schedule = [f"trainer.max_epochs={args.epochs}", f"++trainer.limit_train_batches={args.batches}",
                    f"++trainer.limit_val_batches={args.val_batches}"]
    command = [sys.executable, str(ROOT / "train.py"), *TASKS[task], *VARIANTS[variant], *schedule,
               "model.pretrained=false", "logger=none", "test_after_fit=false", "callbacks.onnx_export.enabled=false",
               "++trainer.num_sanity_val_steps=0", "data.num_workers=0", f"seed={args.seed}",
               f"paths.data_dir={work / 'data' / task}", f"hydra.run.dir={run_dir}",
               "+callbacks.step_timer._target_=bench.bench_precision.StepTimer", f"+callbacks.step_timer.out={times}"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not times.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        return {"error": f"exit {proc.returncode}:\n{tail}"}
    steps = json.loads(times.read_text())
    metrics_file = run_dir / "metrics" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return {"steps": steps, "final_val": metrics.get("final_val", {})}


def selection_metric(task: str) -> str:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return str(compose("train", overrides=TASKS[task][:1]).selection_metric)


def summarize(task: str, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    metric = selection_metric(task)
    row: dict[str, Any] = {"task": task, "metric": metric}
    for variant, result in results.items():
        if "error" in result:
            row[f"{variant}_error"] = result["error"]
            continue
        steps = result["steps"]
        timed = steps[COMPILE_WARMUP:] if variant == "compile" else steps[1:]  # the first step warms up
        row[f"{variant}_ms"] = 1000 * statistics.median(timed or steps)
        if variant == "compile":
            row["compile_s"] = sum(steps[:COMPILE_WARMUP]) - COMPILE_WARMUP * row["compile_ms"] / 1000
        else:
            # the loss too: on a few small epochs a thresholded metric can sit at 0 under both precisions
            row[f"{variant}_metric"] = result["final_val"].get(metric)
            row[f"{variant}_loss"] = result["final_val"].get("val/loss")
    if "fp32_ms" in row and "bf16_ms" in row:
        row["speedup"] = row["fp32_ms"] / row["bf16_ms"]
    return row


def _cell(value: Any, digits: int = 1) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def print_table(rows: list[dict[str, Any]], markdown: bool = False) -> None:
    header = ["task", "fp32 ms", "bf16 ms", "fp32/bf16", "compile ms", "compile s", "metric", "fp32", "bf16",
              "val/loss fp32", "val/loss bf16"]
    lines = [header]
    for r in rows:
        lines.append([r["task"], _cell(r.get("fp32_ms")), _cell(r.get("bf16_ms")), _cell(r.get("speedup"), 2),
                      _cell(r.get("compile_ms")), _cell(r.get("compile_s")), r["metric"],
                      _cell(r.get("fp32_metric"), 3), _cell(r.get("bf16_metric"), 3),
                      _cell(r.get("fp32_loss"), 4), _cell(r.get("bf16_loss"), 4)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        if markdown:
            print("| " + " | ".join(line) + " |" + ("\n|" + " --- |" * len(header) if i == 0 else ""))
        else:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    for r in rows:
        for key, value in r.items():
            if key.endswith("_error"):
                print(f"\n{r['task']} {key.removesuffix('_error')} failed: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the fp32 and bf16 runs (default 3)")
    parser.add_argument("--batches", type=int, default=8, help="training batches per epoch (default 8)")
    parser.add_argument("--val-batches", type=int, default=4, help="validation batches per epoch (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="skip the model.compile runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (cores)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/speed.md)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; the tasks are {', '.join(TASKS)}")
    variants = [v for v in VARIANTS if not (args.no_compile and v == "compile")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        for task in tasks:
            results = {}
            for variant in variants:
                started = time.perf_counter()
                results[variant] = run_variant(task, variant, Path(tmp), args)
                print(f"{task} {variant}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            rows.append(summarize(task, results))
    print(f"\nCPU training step per task, {args.threads} threads, batch of each preset (median ms); "
          f"metric after {args.epochs} epochs x {args.batches} batches, seed {args.seed}")
    print_table(rows, args.markdown)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
