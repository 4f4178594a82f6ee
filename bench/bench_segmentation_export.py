"""A segmentation run's checkpoint against its ONNX bundle: per-item latency at one thread and mask agreement.

    python bench/bench_segmentation_export.py [--run <run dir>] [--images <folder>] [--epochs 2]

Without ``--run`` it trains a small synthetic run (the default segmentation config: U-Net resnet18,
128 px synthetic images, ``debug``-sized epochs) in a temporary folder. It then exports the run
(``suite.exporting.export_run``: ``parity.json`` holds the graph's median ms per item, batch 1, one
thread, for PyTorch and ONNX Runtime) and runs ``predict.py``'s predictor on ``--images`` (default:
the run's synthetic images) with both backends at one thread, printing ms per image and the IoU of
the masks the two write (over all images' pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_small(base: Path, epochs: int) -> Path:
    from omegaconf import OmegaConf

    from suite.training import train
    from tests.conftest import compose_train_config

    run = base / "run"
    cfg = compose_train_config([f"trainer.max_epochs={epochs}", "+trainer.limit_train_batches=4",
                                "+trainer.limit_val_batches=2", "model.pretrained=false", "trainer.accelerator=cpu",
                                "model.log_images=0", "data.synthetic_images=60"], run, base / "data")
    train(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), run / ".hydra" / "config.yaml")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a segmentation run dir (default: train a small one)")
    parser.add_argument("--images", type=Path, default=None, help="images to predict (default: the run's data)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    from deploy.backends import OnnxBackend, TorchBackend
    from deploy.predictors.segmentation import SegmentationPredictor
    from suite.exporting import export_run

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        run = args.run or train_small(base, args.epochs)
        images = args.images or next((base / "data").rglob("images"))
        bundle = base / "export"
        parity = export_run(run, out=bundle, latency_runs=50)
        graph = parity["graphs"]["model"]
        print(json.dumps({"parity": graph["outputs"], "graph_latency": graph["latency"]}, indent=1))
        masks = {}
        for backend in (TorchBackend(run, threads=1), OnnxBackend(bundle, threads=1)):
            predictor = SegmentationPredictor(backend)
            out = base / f"pred_{backend.name}"
            summary = predictor.run([images], out, progress=False)
            print(f"{backend.name}: {summary['ms_per_item']} ms per image (predictor, 1 thread, "
                  f"{summary['items']} images, mean foreground {summary['mean_foreground_fraction']})")
            masks[backend.name] = {p.name: np.array(__import__("cv2").imread(str(p), 0)) > 0
                                   for p in sorted((out / "pictures" / "masks").rglob("*.png"))}
        inter = sum(int((masks["torch"][k] & masks["onnx"][k]).sum()) for k in masks["torch"])
        union = sum(int((masks["torch"][k] | masks["onnx"][k]).sum()) for k in masks["torch"])
        same = sum(bool((masks["torch"][k] == masks["onnx"][k]).all()) for k in masks["torch"])
        print(f"checkpoint vs bundle: mask IoU {inter / union if union else 1.0:.6f} "
              f"({union} foreground pixels in either), identical masks {same}/{len(masks['torch'])}")


if __name__ == "__main__":
    main()
