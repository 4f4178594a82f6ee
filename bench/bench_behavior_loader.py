"""Clip-loading throughput of the behavior DataModule vs the model's training step time.

    python bench/bench_behavior_loader.py [--batches 10] [--image-size 64] [--backbone resnet18]

Per training batch (batch_size events, one augmented clip each) and per validation batch (5 TTA
clips per event): time to load it in the main process (num_workers=0) and time of one forward +
backward (train) or forward (val) of the clip classifier on the CPU. When loading takes a small
share of the step, more DataLoader workers cannot speed training up. Prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from itertools import chain, repeat
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datamodules.behavior import BehaviorDataModule  # noqa: E402
from lightning_modules.losses import FocalLoss  # noqa: E402
from lightning_modules.nets.behavior import ClipClassifier  # noqa: E402


def timed_batches(loader, n: int):  # noqa: ANN001, ANN201
    out, times = [], []
    it = chain.from_iterable(repeat(loader))  # a new pass over the loader whenever one ends
    for _ in range(n):
        t0 = time.perf_counter()
        batch = next(it)
        times.append(time.perf_counter() - t0)
        out.append(batch)
    return out, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dm = BehaviorDataModule(synthetic_dir=tmp, synthetic={"size": 96, "events_per_video": 8},
                                image_size=args.image_size, batch_size=args.batch_size)
        dm.prepare_data()  # generates the synthetic videos (GENERATOR.ensure), as Lightning would
        dm.setup("fit")
        train_batches, train_load = timed_batches(dm.train_dataloader(), args.batches)
        val_batches, val_load = timed_batches(dm.val_dataloader(), args.batches)
        decoded = dm.stats.frames_decoded
    net = ClipClassifier(args.backbone, pretrained=False)
    loss_fn = FocalLoss(gamma=2.0, alpha=None, label_smoothing=0.15)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-5, weight_decay=0.05)
    net.train()
    train_step = []
    for batch in train_batches:
        t0 = time.perf_counter()
        loss = loss_fn(net(batch["video"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_step.append(time.perf_counter() - t0)
    net.eval()
    val_step = []
    with torch.no_grad():
        for batch in val_batches:
            t0 = time.perf_counter()
            net(batch["video"].flatten(0, 1))
            val_step.append(time.perf_counter() - t0)
    med = statistics.median
    b = args.batch_size
    clips_train = b
    clips_val = b * dm.clips_per_event
    print(f"{args.batches} batches of {b} events, {dm.frames_per_clip} frames at {args.image_size}px, "
          f"{args.backbone}, {args.threads} thread(s); {decoded} frames decoded in all")
    print(f"train: load {med(train_load) * 1000:7.1f} ms/batch ({clips_train / med(train_load):6.1f} clips/s) | "
          f"step (fwd+bwd) {med(train_step) * 1000:7.1f} ms | load/step {med(train_load) / med(train_step):.2f}")
    print(f"val  : load {med(val_load) * 1000:7.1f} ms/batch ({clips_val / med(val_load):6.1f} clips/s) | "
          f"step (fwd, {dm.clips_per_event} clips/event) {med(val_step) * 1000:7.1f} ms | "
          f"load/step {med(val_load) / med(val_step):.2f}")


if __name__ == "__main__":
    main()
