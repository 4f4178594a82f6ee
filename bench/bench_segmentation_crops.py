"""Segmentation preset on real images: whole-image training vs the data.crop_size=auto default.

Each configuration trains ``experiment=segmentation`` (the preset's 30 epochs unless ``--epochs``) on the
same data and seed and reports the wall time of the whole ``train.py`` run (fit, test, export, report), the
best validation F1 (the checkpoint's selection metric) and the test F1 of that checkpoint on the held-out
split, which selection never saw. Validation and test always score whole images.

    python bench/bench_segmentation_crops.py --root ../shared/data/segmentation/isbi2012_em --seeds 1 2 \
        --set data.foreground_value=0
    python bench/bench_segmentation_crops.py --step-time 3    # the training step alone, no data

Configurations (``--configs``, default all): ``whole`` (crop_size=null: whole 512 px images in batches
of data.batch_size 8, the earlier default), ``auto`` (the default: 256 px crops in batches of
data.crop_batch_size 4), ``auto_b8`` (crops in batches of 8), ``whole_b4`` (whole images, batches of 4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: dict[str, list[str]] = {
    "whole": ["data.crop_size=null"],
    "auto": [],
    "auto_b8": ["data.crop_batch_size=8"],
    "whole_b4": ["data.crop_size=null", "data.batch_size=4"],
}


def run_one(root: str, config: str, seed: int, out: Path, extra: list[str]) -> dict[str, object]:
    run_dir = out / f"{config}_s{seed}"
    cmd = [sys.executable, "train.py", "experiment=segmentation", "model.pretrained=false", f"data.root={root}",
           f"seed={seed}", f"hydra.run.dir={run_dir}", *CONFIGS[config], *extra]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"config": config, "seed": seed, "error": proc.stderr[-2000:]}
    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())
    return {"config": config, "seed": seed, "wall_s": round(wall, 1), "best_val_f1": metrics.get("best_val/f1"),
            "test_f1": metrics.get("test/f1"), "epochs": metrics.get("epochs_trained")}


def step_times(steps: int, train_images: int) -> None:
    """Training-step time of the preset's U-Net (resnet18, from scratch) per configuration, and the epoch
    it makes for ``train_images`` images (full batches only: the loader drops the last partial one)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lightning_modules.losses import CombinedSegmentationLoss
    from lightning_modules.nets.segmentation import UNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = UNet("resnet18").to(device).train()
    loss_fn = CombinedSegmentationLoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for name, side, batch in (("whole", 512, 8), ("auto", 256, 4), ("auto_b8", 256, 8), ("whole_b4", 512, 4)):
        images = torch.randn(batch, 3, side, side, device=device)
        masks = (torch.rand(batch, 1, side, side, device=device) > 0.5).float()
        times = []
        for i in range(steps + 1):  # the first step warms up
            start = time.perf_counter()
            optimizer.zero_grad()
            loss_fn(net(images), masks).backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
        step = sorted(times)[len(times) // 2]
        per_epoch = max(1, train_images // batch) if train_images > batch else 1
        print(json.dumps({"config": name, "device": device, "crop": side, "batch": batch, "step_s": round(step, 3),
                          "steps_per_epoch": per_epoch, "epoch_s": round(step * per_epoch, 2)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="the segmentation data (images/ and masks/)")
    parser.add_argument("--step-time", type=int, default=0, metavar="STEPS",
                        help="instead of training: time STEPS training steps of each configuration (no data read)")
    parser.add_argument("--train-images", type=int, default=13, help="with --step-time: the training set's size")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the preset's)")
    parser.add_argument("--parallel", action="store_true", help="the seeds of one configuration side by side")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more overrides for every run, e.g. data.foreground_value=0")
    parser.add_argument("--out", default=None, help="run dirs here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write the rows to this file too")
    args = parser.parse_args(argv)
    if args.step_time:
        step_times(args.step_time, args.train_images)
        return 0
    if not args.root:
        parser.error("--root is required (or --step-time)")
    extra = ([f"trainer.max_epochs={args.epochs}"] if args.epochs else []) + list(args.set)
    out = Path(args.out or tempfile.mkdtemp(prefix="seg_crops_"))
    rows = []
    for config in args.configs:
        if args.parallel:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(args.seeds)) as pool:
                rows += list(pool.map(lambda s, c=config: run_one(args.root, c, s, out, extra), args.seeds))
        else:
            rows += [run_one(args.root, config, seed, out, extra) for seed in args.seeds]
        for row in rows[-len(args.seeds):]:
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
