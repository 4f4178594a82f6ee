"""LEGO int8 on trained runs: top-1 agreement with fp32 and latency at batch 1 for every int8 recipe of export.py,
against torch eager fp32 and ONNX Runtime fp32, one table per run (e.g. an EfficientNet-B0 and an edge run).

    python bench/bench_lego_int8.py <run dir> [<run dir> ...] [--size 224] [--threads 1] [--runs 30]
        [--recipes qdq_channel,qdq_channel_keep_sensitive] [--calibration auto|minmax_ma|percentile|entropy]

Calibration uses up to --calib-images evaluation-transformed training images, agreement the held-out test
split (real captures; --with-val adds the validation split), both at --size (default: the run's own image
size). Latency is the median of --runs
timed calls on one image. The machine may be shared: rerun it quietly, and compare ratios within one table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_run(run_dir: str, args: argparse.Namespace) -> None:
    import contextlib
    import io

    import torch

    import export

    overrides = [f"data.image_size={args.size}"] if args.size else []
    cfg, datamodule, module = export.load_run(run_dir, "best", overrides)
    net = module.net.eval()
    size = datamodule.image_size
    calib, _ = export.stacked_images(datamodule, "train", args.calib_images)
    images, items = export.stacked_images(datamodule, "test", args.parity_images)
    if args.with_val:  # more held-out images: one disagreement in the test split alone is about 0.8 %
        val, val_items = export.stacked_images(datamodule, "val", args.parity_images)
        images, items = torch.cat([images, val]), items + val_items
    recipes = list(export.RECIPES) if args.recipes == "auto" else args.recipes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export.export_onnx(net, fp32, images)
        reference = export.run_torch(net, images)
        rows: dict[str, dict[str, float]] = {"ort_fp32": agreement(export, reference, export.run_onnx(fp32, images))}
        models = {"ort_fp32": fp32}
        seconds = {}
        for recipe in recipes:
            path = Path(tmp) / f"{recipe}.onnx"
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its histogram settings
                export.quantize(fp32, path, recipe, calib, args.calibration)
            seconds[recipe] = time.perf_counter() - start
            models[recipe] = path
            rows[recipe] = agreement(export, reference, export.run_onnx(path, images))
        lat = export.latency(net, models, images[:1], [args.threads], args.runs)
    t = str(args.threads)
    acc = export.accuracy(reference, items)
    backbone = cfg.model.net.backbone
    print(f"\n== {run_dir}: {backbone}, {size} px, {len(images)} held-out images, {len(calib)} calibration images, "
          f"calibration {args.calibration}; torch fp32 accuracy on them: part {fraction(acc.get('part_logits'))}, "
          f"colour {fraction(acc.get('color_logits'))}")
    print(f"{'model':32s} {'part agree':>10s} {'colour agree':>12s} {'ms (' + t + ' thr)':>12s} "
          f"{'vs ORT fp32':>11s} {'vs torch':>9s} {'quantize s':>10s}")
    torch_ms, ort_ms = lat["torch_fp32"][t], lat["ort_fp32"][t]
    print(f"{'torch eager fp32':32s} {'1.000':>10s} {'1.000':>12s} {torch_ms:12.2f} {ort_ms / torch_ms:10.2f}x "
          f"{1.0:8.2f}x")
    for name, agree in rows.items():
        ms = lat[name][t]
        part, color = agree.get("part_logits", float("nan")), agree.get("color_logits", float("nan"))
        print(f"{name:32s} {part:10.3f} {color:12.3f} {ms:12.2f} {ort_ms / ms:10.2f}x {torch_ms / ms:8.2f}x "
              f"{seconds.get(name, 0):10.1f}")


def fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def agreement(export: object, reference: dict, outputs: dict) -> dict[str, float]:
    return {k: v["top1_agreement"] for k, v in export.compare(reference, outputs).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dirs", nargs="*", metavar="RUN_DIR")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the run's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calib-images", type=int, default=256)
    parser.add_argument("--parity-images", type=int, default=256)
    parser.add_argument("--recipes", default="auto")
    parser.add_argument("--calibration", default="auto")
    parser.add_argument("--with-val", action="store_true", help="measure agreement on the val split too")
    args = parser.parse_args()
    if not args.runs_dirs:  # `make bench` runs every bench without arguments: this one needs trained runs
        print("bench_lego_int8: give trained lego run dirs, e.g. python bench/bench_lego_int8.py <run dir> --size 224")
        return
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for run_dir in args.runs_dirs:
        bench_run(run_dir, args)


if __name__ == "__main__":
    main()
