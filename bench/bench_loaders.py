"""Wait for the next batch vs one training (and validation) step, for every task's loader and preset network.

    python bench/bench_loaders.py [--task all | behavior relevance segmentation violence lego]
                                  [--workers 0 auto] [--train-batches 16] [--val-batches 10] [--skip 3]
                                  [--accelerator auto]

Per task: its experiment preset (``model.pretrained=false``, the synthetic default data, made a little
larger where the preset's would give fewer batches than the loader policy needs for workers) trained
for one short epoch by a Lightning Trainer with the SimpleProfiler, once per ``--workers`` value
(``0`` = the former default, loading in the main process; ``auto`` = datamodules/loader_options.py).
The profiler's ``train_dataloader_next`` / ``val_next`` is the time the loop waits for the next batch
(with workers: only what is not ready when the step ends; without: the whole load), and
``run_training_batch`` / ``validation_step`` the step. The first ``--skip`` batches of each phase
(worker start-up, first-call costs) are left out: the figures are the steady state. Prints medians
and ``wait/step`` (the goal: <= 0.10, the model never waits long for data).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# experiment preset and the overrides that give every loader enough batches for a steady state
TASKS: dict[str, list[str]] = {
    "behavior": ["experiment=intravideo", "data.synthetic.events_per_video=24"],
    "relevance": ["experiment=relevance_segmentation", "data.synthetic_events=100"],
    "segmentation": ["experiment=segmentation"],
    "violence": ["experiment=violence_optimal", "data.synthetic_videos={train:64,val:40,test:10}"],
    "lego": ["experiment=lego_multitask"],
}
TRAIN_WAIT = "[_TrainingEpochLoop].train_dataloader_next"
TRAIN_STEP = "run_training_batch"
VAL_WAIT = "[_EvaluationLoop].val_next"


def compose(task: str, workers: str, tmp: Path) -> object:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    overrides = [*TASKS[task], "model.pretrained=false", f"data.num_workers={workers}", "logger=none"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp / "run")
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
        cfg.paths.data_dir = str(tmp / "data")
        cfg.paths.cache_dir = str(tmp / "cache")
    HydraConfig().set_config(cfg)
    return cfg


def measure(task: str, workers: str, args: argparse.Namespace, tmp: Path) -> dict[str, float | str]:
    import lightning as L
    from lightning.pytorch.profilers import SimpleProfiler

    from suite.training import build_model, instantiate, prepare_model_and_data

    cfg = compose(task, workers, tmp)
    L.seed_everything(0, workers=True)
    datamodule = instantiate(cfg.data, key="data")
    model = build_model(cfg)
    prepare_model_and_data(model, datamodule, None)
    profiler = SimpleProfiler(dirpath=str(tmp), filename="profile")  # its report to a file, not stdout
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, max_epochs=1, precision=cfg.trainer.get("precision"),
                        limit_train_batches=args.train_batches, limit_val_batches=args.val_batches,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, profiler=profiler,
                        default_root_dir=str(tmp / "run"))
    trainer.fit(model, datamodule=datamodule)
    durations = profiler.recorded_durations
    val_step = next((k for k in durations if k.endswith(".validation_step") and k.startswith("[Strategy]")), "")
    med = statistics.median
    skip = args.skip

    def steady(key: str) -> float:
        values = durations.get(key, [])
        values = values[skip:] if len(values) > skip + 1 else values
        return med(values) if values else float("nan")

    loader = trainer.train_dataloader
    return {
        "workers": str(getattr(loader, "num_workers", "?")), "torch_threads": str(torch.get_num_threads()),
        "train_wait": steady(TRAIN_WAIT), "train_step": steady(TRAIN_STEP),
        "val_wait": steady(VAL_WAIT), "val_step": steady(val_step),
        "device": str(trainer.strategy.root_device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["all"], choices=["all", *TASKS])
    parser.add_argument("--workers", nargs="+", default=["0", "auto"])
    parser.add_argument("--train-batches", type=int, default=16)
    parser.add_argument("--val-batches", type=int, default=10)
    parser.add_argument("--skip", type=int, default=3, help="first batches of each phase left out (warm-up)")
    parser.add_argument("--accelerator", default="auto")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    tasks = list(TASKS) if "all" in args.task else args.task
    threads = torch.get_num_threads()
    print(f"{os.cpu_count()} CPU(s) here, {len(os.sched_getaffinity(0))} usable; medians after {args.skip} "
          f"warm-up batches; wait = the loop waiting for the next batch")
    header = (f"{'task':<13}{'num_workers':>12}{'->':>4}{'threads':>8}{'device':>8} | {'train wait':>10}"
              f"{'step':>9}{'wait/step':>10} | {'val wait':>9}{'step':>9}{'wait/step':>10}")
    rows = []
    for task in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                torch.set_num_threads(threads)  # the policy may lower them: each setting starts alike
                r = measure(task, workers, args, Path(tmp))
                rows.append(f"{task:<13}{workers:>12}{r['workers']:>4}{r['torch_threads']:>8}{r['device']:>8} | "
                            f"{r['train_wait'] * 1000:>8.1f}ms{r['train_step'] * 1000:>7.1f}ms"
                            f"{r['train_wait'] / r['train_step']:>10.2f} | {r['val_wait'] * 1000:>7.1f}ms"
                            f"{r['val_step'] * 1000:>7.1f}ms{r['val_wait'] / r['val_step']:>10.2f}")
                print("row:", rows[-1], flush=True)  # as it comes: a run stopped early keeps what it measured
    print(f"\n{header}\n{'-' * len(header)}")
    print("\n".join(rows))

if __name__ == "__main__":
    main()
