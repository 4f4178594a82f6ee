"""LEGO real images: time to read (decode) a file vs the training transform (resize + strong augmentation).

Tells whether a cache of decoded, resized images would pay: the transform resizes first, so what it
costs does not grow with the file's size; the read does.

    OMP_NUM_THREADS=1 python bench/bench_lego_decode.py [--root ../shared/data/lego] [--n 150] [--size 224]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/lego")
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    import cv2

    from datamodules.images import read_image
    from datamodules.lego import build_transform

    files = sorted(p for p in Path(args.root).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    random.Random(0).shuffle(files)
    files = files[:args.n]
    if not files:
        sys.exit(f"no images under {args.root}")
    transform = build_transform(args.size, "strong")
    read = augment = small = 0.0
    sides = []
    for path in files:
        a = time.perf_counter()
        image = read_image(path)
        b = time.perf_counter()
        transform(image=image)
        c = time.perf_counter()
        resized = cv2.resize(image, (args.size, args.size))
        d = time.perf_counter()
        transform(image=resized)
        e = time.perf_counter()
        read, augment, small = read + b - a, augment + c - b, small + e - d
        sides.append(max(image.shape[:2]))
    n = len(files)
    print(f"{n} images, longest side {min(sides)}-{max(sides)} px: read {1e3 * read / n:.2f} ms, "
          f"resize + augment {1e3 * augment / n:.2f} ms, augment of a pre-resized image {1e3 * small / n:.2f} ms")


if __name__ == "__main__":
    main()
