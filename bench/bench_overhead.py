"""What the suite's training machinery costs per step, against a plain PyTorch loop, for every task.

    python bench/bench_overhead.py                                  # the five tasks, 3 epochs of 20 steps
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
Both medians are printed with their ratio (goal: <= 1.05x). ``--ablate`` times the suite once more
without each callback, without the logger, and with neither, to show which one costs.
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


class StepTimer(L.Callback):
    """Times between consecutive train-batch starts, per epoch (the interval holds one whole step)."""

    def __init__(self) -> None:
        self.epochs: list[list[float]] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append([])
        self._last = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.epochs[-1].append(now - self._last)
        self._last = now


def compose(task: str, run_dir: Path, data_dir: Path, epochs: int, extra: list[str]) -> Any:
    overrides = [f"experiment={EXPERIMENTS[task]}", "model.pretrained=false", f"trainer.max_epochs={epochs}",
                 "trainer.min_epochs=1", "trainer.num_sanity_val_steps=0", "++trainer.limit_val_batches=1",
                 "test_after_fit=false", *extra]
    return compose_train_config(overrides, run_dir, data_dir)


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


def time_suite(cfg: Any, batches: list[Any], drop: set[str] = frozenset(), no_logger: bool = False) -> list[float]:
    """Per-step times of ``Trainer.fit`` after the first epoch (see the module doc)."""
    datamodule, model, callbacks, loggers = build(cfg, set(drop), no_logger)
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, key="trainer", callbacks=[*callbacks.values(), timer],
                          logger=loggers or False)
    # fixed batches (loading is not what is measured); batch_size=None hands each one over as it is
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    datamodule.train_dataloader = lambda: loader
    trainer.fit(model, datamodule=datamodule)
    for logger in trainer.loggers:
        logger.finalize("success")
    return [t for epoch in timer.epochs[1:] for t in epoch]


def time_plain(cfg: Any, model: Any, batches: list[Any], epochs: int) -> list[float]:
    """The same steps by hand: ``training_step``, ``backward``, clip (when configured), ``step``."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
                          else "cpu")
    from lightning.fabric.utilities.apply_func import move_data_to_device

    model = model.to(device).train()
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    clip = cfg.trainer.get("gradient_clip_val")
    times: list[float] = []
    for epoch in range(epochs):
        last = None
        for i, batch in enumerate(batches):
            now = time.perf_counter()
            if last is not None and epoch > 0:
                times.append(now - last)
            last = now
            batch = move_data_to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            out = model.training_step(batch, i)
            # a StepOutput, Lightning's {"loss": ...} dict, or the loss tensor
            loss = out["loss"] if isinstance(out, dict) else getattr(out, "loss", out)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return times


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def bench_task(task: str, data_dir: Path, steps: int, epochs: int, ablate: bool, extra: list[str]) -> dict[str, Any]:
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
        if ablate:
            names = [*callbacks, "logger"]
            result["without"] = {}
            for name in names:
                times = time_suite(cfg, batches, drop=set() if name == "logger" else {name},
                                   no_logger=name == "logger")
                result["without"][name] = ms(times)
            result["without"]["all callbacks and logger"] = ms(time_suite(cfg, batches, drop=set(callbacks),
                                                                           no_logger=True))
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
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every task (Hydra grammar)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's advice (num_workers, self.log outside a trainer) on every fit
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    results = [bench_task(task, data_dir, args.steps, args.epochs, args.ablate, args.overrides) for task in args.tasks]
    device = "cuda" if torch.cuda.is_available() else f"cpu, {args.threads} thread(s)"
    print(f"\nper-step time, median of epochs 2..{args.epochs} x {args.steps - 1} steps ({device})")
    print(f"{'task':14s}{'experiment':24s}{'plain ms':>10s}{'suite ms':>10s}{'ratio':>8s}")
    for r in results:
        print(f"{r['task']:14s}{r['experiment']:24s}{r['plain_ms']:10.1f}{r['suite_ms']:10.1f}{r['ratio']:7.2f}x")
    for r in results:
        if "without" in r:
            print(f"\n{r['task']}: suite {r['suite_ms']:.1f} ms/step; without ...")
            for name, value in r["without"].items():
                print(f"  {name:28s}{value:8.1f} ms  ({r['suite_ms'] - value:+.1f} ms saved)")


if __name__ == "__main__":
    main()
