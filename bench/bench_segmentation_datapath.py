"""Segmentation: training step time with the real DataLoader vs the batch already in memory.

    python bench/bench_segmentation_datapath.py [--steps 30] [--workers 0] [--size 128]

Prints median ms per step for both and the data path's share of a step. Uses the default
synthetic dataset and the default model config (resnet18 U-Net).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from datamodules.segmentation import SegmentationDataModule
from lightning_modules.losses import CombinedSegmentationLoss
from lightning_modules.nets.segmentation import UNet


def timed_steps(net, loss_fn, opt, batches, steps: int) -> tuple[list[float], list[float]]:
    """Per step: total ms and the ms spent waiting for the batch."""
    times, fetch = [], []
    it = iter(batches)
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(it)
        fetched = time.perf_counter()
        loss = loss_fn(net(batch["image"]), batch["mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - start) * 1000)
        fetch.append((fetched - start) * 1000)
    return times, fetch


def forever(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        dm = SegmentationDataModule(synthetic_dir=str(Path(tmp)), synthetic_images=200, synthetic_size=args.size,
                                    batch_size=args.batch_size, num_workers=args.workers)
        dm.prepare_data()
        dm.setup()
        net = UNet()
        net.train()
        loss_fn = CombinedSegmentationLoss()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loader = dm.train_dataloader()
        timed_steps(net, loss_fn, opt, forever(loader), 3)  # warm-up
        with_loader, fetch = timed_steps(net, loss_fn, opt, forever(loader), args.steps)
        batch = next(iter(loader))
        in_memory, _ = timed_steps(net, loss_fn, opt, iter(lambda: batch, None), args.steps)
    a, b = statistics.median(with_loader), statistics.median(in_memory)
    print(f"segmentation train step, batch {args.batch_size} x {args.size}px, {args.workers} loader workers, "
          f"{torch.get_num_threads()} torch threads, {args.steps} steps")
    print(f"  real DataLoader : median {a:8.1f} ms/step")
    print(f"  batch in memory : median {b:8.1f} ms/step")
    f = statistics.median(fetch)
    print(f"  of which waiting for the batch: median {f:8.1f} ms ({f / a * 100:.1f} % of a step)")
    print(f"  ratio real/in-memory {a / b:.2f}x")


if __name__ == "__main__":
    main()
