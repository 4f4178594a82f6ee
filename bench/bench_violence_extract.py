"""Feature extraction speed and the cost of a cache hit (first vs second setup of the same data).

    python bench/bench_violence_extract.py [--root DIR] [--backbone resnet18 --frame-size 112 --feature-dim 512]
                                           [--multiplier 3] [--repeats 3]

Without --root, the synthetic default videos (tiny backbone) are used. Each repeat extracts into a
fresh cache folder (first prepare_data + setup), then builds a second DataModule on the same cache
(second: no decoding, no backbone). Prints medians of both and videos/s of the extraction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.violence import ViolenceDataModule  # noqa: E402
from lightning_modules.nets.violence import FrameEncoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="videos (default: synthetic)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--frame-size", type=int, default=112)
    parser.add_argument("--feature-dim", type=int, default=512)
    parser.add_argument("--multiplier", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.root is not None and not args.root.is_dir():
        print(f"skipped: {args.root} not found")
        return
    first, second, rates = [], [], []
    # --backbone etc. set the encoder of your videos; the synthetic default keeps its tiny one
    encoder = FrameEncoder(args.backbone, pretrained=False, frame_size=args.frame_size, feature_dim=args.feature_dim)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            kw = dict(root=str(args.root) if args.root else None, frame_encoder=encoder,
                      aug_multiplier=args.multiplier, cache_dir=f"{tmp}/cache{i}", synthetic_dir=f"{tmp}/syn",
                      extract_device="cpu")
            dm = ViolenceDataModule(**kw)
            if args.root is None:  # the synthetic videos are written before the clock starts
                generator, params = dm.synthetic()
                generator.ensure(dm.data_root(), dm.seed, **params)
            t0 = time.perf_counter()
            dm.prepare_data()
            dm.setup("fit")
            first.append(time.perf_counter() - t0)
            rates.append(dm.extraction.videos_decoded / max(dm.extraction.seconds, 1e-9))
            again = ViolenceDataModule(**kw)
            t0 = time.perf_counter()
            again.prepare_data()
            again.setup("fit")
            second.append(time.perf_counter() - t0)
            assert again.extraction.skipped
    videos = dm.extraction.videos_decoded
    print(f"data: {args.root or 'synthetic default'}; {videos} videos decoded per extraction, "
          f"{args.multiplier}x copies of the training videos")
    print(f"first prepare_data + setup (extraction): median {statistics.median(first):.2f} s, "
          f"{statistics.median(rates):.2f} videos/s")
    print(f"second prepare_data + setup (cache hit): median {statistics.median(second):.3f} s "
          f"({statistics.median(first) / statistics.median(second):.0f}x faster)")


if __name__ == "__main__":
    main()
