"""Throughput of the LEGO training pipeline (the seed's strong augmentation) vs the evaluation transform.

    python bench/bench_lego_augment.py [--size 224] [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    import numpy as np

    from datamodules.lego import build_transform

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (300, 280, 3), dtype=np.uint8) for _ in range(16)]
    for preset in ("strong", "light", "none"):
        transform = build_transform(args.size, preset)
        rates = []
        for rep in range(3):
            transform.set_random_seed(rep)
            start = time.perf_counter()
            for i in range(args.n):
                transform(image=images[i % len(images)])
            rates.append(args.n / (time.perf_counter() - start))
        print(f"{preset:6s} {statistics.median(rates):8.0f} images/s (median of 3, {args.size} px, one process)")


if __name__ == "__main__":
    main()
