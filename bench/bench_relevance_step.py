"""Phase-2 (relevance segmentation) training step time: data path vs in-memory batches.

    python bench/bench_relevance_step.py [--image-size 224] [--batch-size 4] [--steps 6]

"data path" = the DataModule's train loader (JPEG decode, resize, augmentation, motion masks
from the cache) + forward/backward/step; "in-memory" = the same step on batches already built.
The difference is what the input pipeline costs per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from itertools import chain, repeat
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datamodules.relevance import RelevanceSegmentationDataModule  # noqa: E402
from lightning_modules.losses import CombinedSegmentationLoss  # noqa: E402
from lightning_modules.nets.segmentation import UNet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        dm = RelevanceSegmentationDataModule(synthetic_dir=tmp, cache_dir=f"{tmp}/cache", image_size=args.image_size,
                                             batch_size=args.batch_size, synthetic_events=20)
        dm.prepare_data()
        dm.setup("fit")
        net, loss_fn = UNet(num_classes=1), CombinedSegmentationLoss()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

        def step(batch: dict) -> None:
            opt.zero_grad()
            loss_fn(net(batch["image"]), batch["mask"]).backward()
            opt.step()

        loader = dm.train_dataloader()
        batches = [b for _, b in zip(range(args.steps), loader, strict=False)]
        step(batches[0])  # warm-up
        data_path, loading = [], []
        it = chain.from_iterable(repeat(loader))  # a new pass over the loader whenever one ends
        for _ in range(args.steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            step(batch)
            data_path.append(time.perf_counter() - t0)
            loading.append(t1 - t0)
        in_memory = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            step(batches[i % len(batches)])
            in_memory.append(time.perf_counter() - t0)
    dp, im, ld = (statistics.median(x) * 1000 for x in (data_path, in_memory, loading))
    print(f"phase-2 step, {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.threads} thread(s), "
          f"median of {args.steps}")
    print(f"  data path  {dp:8.1f} ms/step (loading {ld:.1f} ms)")
    print(f"  in-memory  {im:8.1f} ms/step")
    print(f"  ratio      {dp / im:8.2f}x")


if __name__ == "__main__":
    main()
