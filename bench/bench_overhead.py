"""What the suite's training machinery costs per step, against a plain PyTorch loop, for every task.

    python bench/bench_overhead.py                                  # the five tasks, 3 epochs of 20 steps
    python bench/bench_overhead.py --tasks segmentation --profile   # + the costliest hooks (SimpleProfiler)
    python bench/bench_overhead.py --tasks segmentation --ablate    # + the suite with each callback removed
    python bench/bench_overhead.py --steps 40 --epochs 3 --threads 1 --data-dir /tmp/bench_data

"suite" = the config ``python train.py experiment=<name>`` composes (its callbacks, TensorBoard logger,
progress bar, trainer settings) built by the functions of ``suite.training`` and run by a real
``Trainer.fit``; its train loader is replaced by a fixed list of batches drawn once from the task's
synthetic DataModule, so that data loading is out of both figures. Per-step time = the time between two
consecutive ``on_train_batch_start`` hooks of one epoch (step, backward, optimizer, every callback's
batch hooks, logging, progress bar); the first epoch is warm-up and not counted, nor are the epoch ends.
"plain" = the same module (a copy with the same initial weights), the same batches and optimizer:
``training_step`` (forward + loss), ``backward``, gradient clipping when the config clips, ``step``.
On a GPU, per-step time is each epoch's mean (the GPU waited for at its first and last step), in both loops.
Both medians are printed with their ratio (goal: <= 1.05x). ``--profile`` runs one more suite fit under
Lightning's SimpleProfiler and prints the costliest hooks in ms per step; ``--ablate`` times the suite once
more without each callback, without the logger, with neither, and at other logging / progress bar rates.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from suite.launch import prepare_job  # noqa: E402
from suite.training import (  # noqa: E402
    build_callbacks,
    build_loggers,
    build_model,
    instantiate,
    prepare_model_and_data,
)
from tests.conftest import compose_train_config  # noqa: E402

# One experiment per task: the one its docs train first.
EXPERIMENTS = {
    "segmentation": "segmentation",
    "behavior": "intravideo",
    "violence": "violence_optimal",
    "relevance": "relevance_segmentation",
    "lego": "lego_multitask",
}


CUDA = torch.cuda.is_available()


def stamp(batch_idx: int, count: int) -> float:
    """Wall time at the start of a step. On a GPU the queued kernels are waited for at the first and the last
    step of an epoch only: a wait at every step would hide what a per-step read-back (``float(loss)``) costs."""
    if CUDA and batch_idx in (0, count - 1):
        torch.cuda.synchronize()
    return time.perf_counter()


def step_times(epochs: list[list[float]]) -> list[float]:
    """Per-step times from the step-start stamps of the timed epochs: every interval on the CPU; on a GPU each
    epoch's mean (first to last stamp, both after a wait), since single intervals are then only launch times."""
    if CUDA:
        return [(e[-1] - e[0]) / (len(e) - 1) for e in epochs if len(e) > 1]
    return [b - a for e in epochs for a, b in zip(e, e[1:], strict=False)]


class StepTimer(L.Callback):
    """Stamps every train-batch start, per epoch (two stamps apart = one whole step)."""

    def __init__(self) -> None:
        self.epochs: list[list[float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.epochs[-1].append(stamp(batch_idx, int(trainer.num_training_batches)))


def compose(task: str, run_dir: Path, data_dir: Path, epochs: int, extra: list[str]) -> Any:
    overrides = [f"experiment={EXPERIMENTS[task]}", "model.pretrained=false", f"trainer.max_epochs={epochs}",
                 "trainer.min_epochs=1", "trainer.num_sanity_val_steps=0", "++trainer.limit_val_batches=1",
                 # the batches are drawn once, in this process: no loader workers to start
                 "test_after_fit=false", "data.num_workers=0", *extra]
    # what train.py does before building: e.g. the bar is redrawn every 50 batches when stdout is not a terminal
    return prepare_job(compose_train_config(overrides, run_dir, data_dir))


def with_value(cfg: Any, key: str, value: Any) -> Any:
    changed = copy.deepcopy(cfg)
    OmegaConf.update(changed, key, value, merge=False)
    return changed


def fixed_batches(datamodule: Any, count: int) -> list[Any]:
    """``count`` batches drawn once from the train loader (cycled when it holds fewer)."""
    drawn: list[Any] = []
    while len(drawn) < count:
        before = len(drawn)
        for batch in datamodule.train_dataloader():
            drawn.append(batch)
            if len(drawn) == count:
                break
        if len(drawn) == before:
            raise RuntimeError("the train loader yields no batches")
    return drawn


def build(cfg: Any, drop: set[str], no_logger: bool) -> tuple[Any, Any, dict[str, Any], list[Any]]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, key="data")
    model = build_model(cfg)
    callbacks = {k: v for k, v in build_callbacks(cfg).items() if k not in drop}
    loggers = [] if no_logger else build_loggers(cfg)
    if not loggers:  # as suite.training does: LearningRateMonitor refuses a trainer without a logger
        callbacks = {k: c for k, c in callbacks.items() if type(c).__name__ != "LearningRateMonitor"}
    prepare_model_and_data(model, datamodule, None)
    return datamodule, model, callbacks, loggers


def time_suite(cfg: Any, batches: list[Any], drop: set[str] = frozenset(), no_logger: bool = False,
               profiler: Any = None) -> list[float]:
    """Per-step times of ``Trainer.fit`` after the first epoch (see the module doc)."""
    datamodule, model, callbacks, loggers = build(cfg, set(drop), no_logger)
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, key="trainer", callbacks=[*callbacks.values(), timer],
                          logger=loggers or False, profiler=profiler)
    # fixed batches (loading is not what is measured); batch_size=None hands each one over as it is
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    datamodule.train_dataloader = lambda: loader
    trainer.fit(model, datamodule=datamodule)
    for logger in trainer.loggers:
        logger.finalize("success")
    return step_times(timer.epochs[1:])


def time_plain(cfg: Any, model: Any, batches: list[Any], epochs: int) -> list[float]:
    """The same steps by hand: ``training_step``, ``backward``, clip (when configured), ``step``."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
                          else "cpu")
    from lightning.fabric.utilities.apply_func import move_data_to_device

    model = model.to(device).train()
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    clip = cfg.trainer.get("gradient_clip_val")
    stamps: list[list[float]] = []
    for _ in range(epochs):
        stamps.append([])
        for i, batch in enumerate(batches):
            stamps[-1].append(stamp(i, len(batches)))
            batch = move_data_to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            out = model.training_step(batch, i)
            # a StepOutput, Lightning's {"loss": ...} dict, or the loss tensor
            loss = out["loss"] if isinstance(out, dict) else getattr(out, "loss", out)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
    return step_times(stamps[1:])


def hook_costs(cfg: Any, batches: list[Any], epochs: int, top: int = 12) -> dict[str, float]:
    """Lightning's SimpleProfiler over one suite fit: the hooks that cost most, in ms per training step
    (a hook's whole time over the fit divided by the steps; epoch-end hooks are spread over the steps)."""
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler()
    time_suite(cfg, batches, profiler=profiler)
    steps = len(batches) * epochs
    # the hooks, not the loops that hold them nor the step itself (forward, backward and optimizer step,
    # which the plain loop does too; the module's optimizer_step holds the other two)
    step_itself = ("optimizer_step", ".backward", ".training_step")
    totals = {name: sum(durations) for name, durations in profiler.recorded_durations.items()
              if "]" in name and not name.startswith("run_training") and not name.endswith(step_itself)}
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return {name: 1000 * total / steps for name, total in ranked}


def ablations(cfg: Any, batches: list[Any], callbacks: list[str]) -> dict[str, float]:
    """Median ms/step of the suite without each callback, without the logger, without all of them, and
    with other logging / progress bar rates."""
    out = {f"without {name}": ms(time_suite(cfg, batches, drop={name})) for name in callbacks}
    out["without the logger"] = ms(time_suite(cfg, batches, no_logger=True))
    out["without all callbacks and logger"] = ms(time_suite(cfg, batches, drop=set(callbacks), no_logger=True))
    for every in (1, 10, 50):
        out[f"log_every_n_steps={every}"] = ms(time_suite(with_value(cfg, "trainer.log_every_n_steps", every),
                                                          batches))
    if "progress_bar" in callbacks:
        for rate in (1, 10, 50):
            out[f"progress bar refresh_rate={rate}"] = ms(time_suite(
                with_value(cfg, "callbacks.progress_bar.refresh_rate", rate), batches))
    return out


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def bench_task(task: str, data_dir: Path, steps: int, epochs: int, ablate: bool, profile: bool,
               extra: list[str]) -> dict[str, Any]:
    print(f"[{task}] building", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(task, Path(tmp) / "run", data_dir, epochs, extra)
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        datamodule, model, callbacks, _ = build(cfg, set(), no_logger=True)
        batches = fixed_batches(datamodule, steps)
        plain_model = copy.deepcopy(model)
        # plain before and after the suite, pooled: the machine's load drifts during a run
        plain = time_plain(cfg, copy.deepcopy(plain_model), batches, epochs)
        suite = time_suite(cfg, batches)
        plain += time_plain(cfg, plain_model, batches, epochs)
        result = {"task": task, "experiment": EXPERIMENTS[task], "plain_ms": ms(plain), "suite_ms": ms(suite)}
        result["ratio"] = result["suite_ms"] / result["plain_ms"]
        result["bar_refresh_rate"] = OmegaConf.select(cfg, "callbacks.progress_bar.refresh_rate")
        result["log_every_n_steps"] = cfg.trainer.log_every_n_steps
        if profile:
            result["hooks"] = hook_costs(cfg, batches, epochs)
        if ablate:
            result["variants"] = ablations(cfg, batches, list(callbacks))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (the fixed batches)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up, not counted")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fixed: timings compare)")
    parser.add_argument("--ablate", action="store_true", help="also time the suite without each callback")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the synthetic datasets are generated (reused between runs); default a temp dir")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one suite fit (SimpleProfiler): the costliest hooks in ms/step")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every task (Hydra grammar)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's advice (num_workers, self.log outside a trainer) on every fit
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    results = [bench_task(task, data_dir, args.steps, args.epochs, args.ablate, args.profile, args.overrides)
               for task in args.tasks]
    if args.json is not None:
        from suite.io import atomic_write_json

        atomic_write_json(args.json, {"threads": args.threads, "steps": args.steps, "epochs": args.epochs,
                                      "cuda": torch.cuda.is_available(), "results": results})
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)"
    print(f"\nper-step time, median of epochs 2..{args.epochs} x {args.steps - 1} steps ({device})")
    print(f"{'task':14s}{'experiment':24s}{'plain ms':>10s}{'suite ms':>10s}{'ratio':>8s}")
    for r in results:
        print(f"{r['task']:14s}{r['experiment']:24s}{r['plain_ms']:10.1f}{r['suite_ms']:10.1f}{r['ratio']:7.2f}x")
    for r in results:
        print(f"{r['task']}: bar refresh_rate {r['bar_refresh_rate']}, log_every_n_steps {r['log_every_n_steps']}")
    for r in results:
        if "hooks" in r:
            print(f"\n{r['task']}: costliest hooks besides the step itself (SimpleProfiler, total over the fit "
                  "/ training steps; epoch-end hooks, which the per-step time leaves out, are spread over the steps)")
            for name, value in r["hooks"].items():
                print(f"  {value:8.2f}  {name}")
    for r in results:
        if "variants" in r:
            print(f"\n{r['task']}: suite {r['suite_ms']:.1f} ms/step, plain {r['plain_ms']:.1f} ms/step")
            for name, value in r["variants"].items():
                print(f"  {name:40s}{value:8.1f} ms  ({value - r['suite_ms']:+.1f} ms, "
                      f"{value / r['plain_ms']:.2f}x plain)")

if __name__ == "__main__":
    main()
