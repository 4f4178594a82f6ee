"""Checkpoint against bundle for the relevance and LEGO predictors, on inputs a run never saw.

    OMP_NUM_THREADS=1 python bench/bench_predict_relevance_lego.py relevance <run dir> <events> [--out DIR]
    OMP_NUM_THREADS=1 python bench/bench_predict_relevance_lego.py lego <run dir> <images ...> [--out DIR]

Runs ``predict.py``'s predictor over the run's checkpoint (PyTorch) and over its bundle
(``<run dir>/export``, ONNX Runtime), both at one thread, writing ``<out>/torch`` and ``<out>/onnx``
(predictions.csv, pictures/, summary.json), and prints JSON: per-item latency of each (end to end, and
the network alone), and their agreement: relevance -> alert and per-region agreement, mask IoU of the
relevance maps (> threshold) and their largest difference; lego -> top-1 agreement per head and the
largest confidence difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _median_ms(fn, items: list, repeats: int = 3) -> float:  # noqa: ANN001
    times = []
    for item in items:
        fn(item)  # warm-up of this item's shapes
        for _ in range(repeats):
            start = time.perf_counter()
            fn(item)
            times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("relevance", "lego"))
    parser.add_argument("run", type=Path)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_predict"))
    args = parser.parse_args(argv)

    from deploy.backends import OnnxBackend, TorchBackend
    from deploy.predictors import predictor_for

    backends = {"torch": TorchBackend(args.run, threads=1), "onnx": OnnxBackend(args.run / "export", threads=1)}
    predictors = {name: predictor_for(backend) for name, backend in backends.items()}
    report: dict = {"task": args.task, "run": str(args.run), "threads": 1}
    for name, predictor in predictors.items():
        out = args.out / name
        summary = predictor.run(args.inputs, out, progress=False)
        report[f"{name}_ms_per_item_end_to_end"] = summary["ms_per_item"]
        report["items"] = summary["items"]
    a, b = _rows(args.out / "torch" / "predictions.csv"), _rows(args.out / "onnx" / "predictions.csv")
    assert [r["item_id"] for r in a] == [r["item_id"] for r in b]
    pairs = list(zip(a, b, strict=True))
    torch_p, onnx_p = predictors["torch"], predictors["onnx"]
    items = torch_p.discover(args.inputs)
    if args.task == "relevance":
        regions = [(x, y) for ra, rb in pairs
                   for x, y in zip(ra["region_scores"].split(";"), rb["region_scores"].split(";"), strict=True) if x]
        report["alert_agreement"] = round(float(np.mean([ra["pred"] == rb["pred"] for ra, rb in pairs])), 4)
        report["regions"] = len(regions)
        report["region_decision_agreement"] = round(float(np.mean(
            [(float(x) > torch_p.region_threshold) == (float(y) > onnx_p.region_threshold) for x, y in regions]
        )), 4) if regions else None
        report["max_region_score_diff"] = max((abs(float(x) - float(y)) for x, y in regions), default=0.0)
        threshold = float(torch_p.meta["options"].get("threshold", 0.5))
        inter = union = 0
        max_diff = 0.0
        inputs = []
        for event in items:
            frames = torch_p.read_event(event)
            ma, mb = torch_p.relevance(frames), onnx_p.relevance(frames)
            inter += int(((ma > threshold) & (mb > threshold)).sum())
            union += int(((ma > threshold) | (mb > threshold)).sum())
            max_diff = max(max_diff, float(np.abs(ma - mb).max()))
            inputs.append(torch_p.network_input(frames))
        report["mask_iou"] = round(inter / union, 6) if union else None
        report["mask_pixels_above_threshold"] = union
        report["max_relevance_diff"] = max_diff
        graph = "model"
        for name, backend in backends.items():
            report[f"{name}_ms_per_event_network"] = _median_ms(lambda x, be=backend: be.run(graph, x), inputs[:8])
        report["frames_per_event_network"] = int(inputs[0].shape[0])
    else:
        for head in torch_p.heads:
            report[f"{head}_top1_agreement"] = round(float(np.mean(
                [ra[f"{head}_pred"] == rb[f"{head}_pred"] for ra, rb in pairs])), 4)
            report[f"{head}_max_confidence_diff"] = max(
                abs(float(ra[f"{head}_confidence"]) - float(rb[f"{head}_confidence"])) for ra, rb in pairs)
        from datamodules.images import read_image
        from deploy.onnx_predictor import preprocess

        inputs = [preprocess(read_image(path), torch_p.resize) for path, _ in items[:16]]
        for name, backend in backends.items():
            report[f"{name}_ms_per_image_network"] = _median_ms(lambda x, be=backend: be.run("model", x), inputs)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
