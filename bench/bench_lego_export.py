"""EfficientNet-B0 LEGO classifier at 224 px (seed sizes: 200 parts, 50 colours), batch 1, one thread:
torch eager fp32 vs ONNX Runtime fp32 vs each int8 recipe of export.py.

    python bench/bench_lego_export.py [--size 224] [--runs 40] [--threads 1]

Calibration and agreement use synthetic "real" LEGO captures (no training run needed); the
network is untrained, so agreement figures here are a floor, not what a trained model gets.
Prints medians and ratios; compare ratios from one run (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()

    import torch

    import export
    from datamodules.lego import LegoDataModule
    from datamodules.synthetic.lego import GENERATOR
    from lightning_modules.nets.lego import LegoClassifier

    with tempfile.TemporaryDirectory() as tmp:
        root = GENERATOR.ensure(Path(tmp) / "lego", 0, size=96, real_captures=4)
        dm = LegoDataModule(root=str(root), image_size=args.size)
        dm.setup()
        images, _ = export.stacked_images(dm, "train", args.images)
        torch.manual_seed(0)
        net = LegoClassifier(num_parts=200, num_colors=50, freeze_ratio=0.0).eval()
        fp32 = Path(tmp) / "fp32.onnx"
        export.export_onnx(net, fp32, images)
        reference = export.run_torch(net, images)
        models = {"ort_fp32": fp32}
        agreement = {"ort_fp32": export.compare(reference, export.run_onnx(fp32, images))}
        for variant in export.RECIPES:
            path = export.quantize(fp32, Path(tmp) / f"{variant}.onnx", variant, images)
            models[f"int8_{variant}"] = path
            agreement[f"int8_{variant}"] = export.compare(reference, export.run_onnx(path, images))
        lat = export.latency(net, models, images[:1], [args.threads], args.runs)
        gflop = export.gflops_per_image(net, args.size)
    t = str(args.threads)
    floor = gflop / 90.0 * 1000
    print(f"{args.size}x{args.size}, batch 1, {args.threads} thread(s), median of {args.runs}; "
          f"{gflop:.3f} GFLOP/image, compute floor {floor:.2f} ms at 90 GFLOP/s")
    print(f"{'model':34s} {'ms':>8s} {'vs torch':>9s} {'vs ORT fp32':>12s} {'floor/ms':>9s}  top-1 agreement")
    for name, per in lat.items():
        ms = per[t]
        agree = agreement.get(name)
        cells = ", ".join(f"{k.split('_')[0]} {v['top1_agreement']:.3f}" for k, v in agree.items()) if agree else ""
        print(f"{name:34s} {ms:8.2f} {lat['torch_fp32'][t] / ms:8.2f}x {lat['ort_fp32'][t] / ms:11.2f}x "
              f"{floor / ms:9.2f}  {cells}")


if __name__ == "__main__":
    main()
