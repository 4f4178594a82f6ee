"""GPU check: each task's real training step under fp32, 16-mixed (AMP + grad scaling), bf16-mixed and
torch.compile, on the task's synthetic data, with throughput; prints one table and writes it as JSON.

    python bench/gpu_check.py [--tasks segmentation,behavior,...] [--steps 20] [--json gpu_check.json]

The step is the module's own ``training_step`` (loss, metrics updates, logging calls) plus backward and
the optimizer step, on one fixed batch already on the GPU: it times the model, not the data path. Run by
``bench/gpu_check.sh``; on a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: task -> the experiment preset and overrides that keep its synthetic data small
TASKS: dict[str, list[str]] = {
    "segmentation": ["experiment=segmentation"],
    "behavior": ["experiment=intravideo"],
    "violence": ["experiment=violence_optimal"],
    "relevance": ["experiment=relevance_segmentation"],
    "lego": ["experiment=lego_multitask"],
}
MODES = ("fp32", "16-mixed", "bf16-mixed", "bf16-mixed+compile")


def compose(overrides: list[str], data_dir: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[*overrides, "model.pretrained=false"],
                            return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(data_dir / "run")
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.cache_dir = str(data_dir / "cache")
    HydraConfig().set_config(cfg)
    return cfg


def task_batch(task: str, data_dir: Path) -> tuple[Any, Any, Any]:
    """(module on cuda, its optimizer, one training batch on cuda)."""
    import torch
    from lightning.pytorch.utilities import move_data_to_device

    from suite.training import build_model, instantiate, prepare_model_and_data

    cfg = compose(TASKS[task], data_dir / task)
    datamodule = instantiate(cfg.data, key="data")
    module = build_model(cfg)
    prepare_model_and_data(module, datamodule, None)
    batch = next(iter(datamodule.train_dataloader()))
    module = module.cuda().train()
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    return module, optimizer, move_data_to_device(batch, torch.device("cuda"))


def loss_of(output: Any) -> Any:
    return output["loss"] if isinstance(output, dict) else output


def time_steps(module: Any, optimizer: Any, batch: Any, mode: str, steps: int, warmup: int = 3) -> dict[str, float]:
    import torch

    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(mode.split("+")[0])
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    original = module.net
    if mode.endswith("+compile"):
        module.net = torch.compile(original)
    times = []
    try:
        for i in range(warmup + steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_of(module.training_step(batch, i))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        module.net = original
    median = statistics.median(times)
    items = _batch_items(batch)
    return {"step_ms": round(median * 1000, 2), "items_per_s": round(items / median, 1),
            "loss_finite": bool(torch.isfinite(loss).item()),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def _batch_items(batch: Any) -> int:
    import torch

    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to measure")
        return
    card = torch.cuda.get_device_name(0)
    print(f"gpu_check on {card} (torch {torch.__version__}, {torch.cuda.device_count()} device(s))")
    torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {"card": card, "torch": torch.__version__, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            try:
                module, optimizer, batch = task_batch(task, Path(tmp))
            except Exception as err:  # report and go on: one task's failure must not hide the others
                results["tasks"][task] = {"error": f"{type(err).__name__}: {err}"[:300]}
                print(f"{task}: setup failed: {results['tasks'][task]['error']}")
                continue
            row: dict[str, Any] = {"batch": _batch_items(batch)}
            for mode in MODES:
                torch.cuda.reset_peak_memory_stats()
                try:
                    row[mode] = time_steps(module, optimizer, batch, mode, args.steps)
                except Exception as err:  # a mode that breaks (compile on a recurrent cell ...) is a finding
                    row[mode] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
            results["tasks"][task] = row
            del module, optimizer, batch
            torch.cuda.empty_cache()
    print(f"\n| task | batch | {' | '.join(MODES)} |")
    print("| --- | --- |" + " --- |" * len(MODES))
    for task, row in results["tasks"].items():
        if "error" in row:
            print(f"| {task} | setup failed: {row['error'][:80]} |")
            continue
        cells = []
        for mode in MODES:
            r = row[mode]
            cells.append(r["error"][:60] if "error" in r else f"{r['step_ms']} ms ({r['items_per_s']}/s)")
        print(f"| {task} | {row['batch']} | {' | '.join(cells)} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
