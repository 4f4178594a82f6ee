"""Relevance decisions for motion events: ``complete.pth`` of a relevance_segmentation run.

    python -m deploy.relevance <events dir> --model <run>/checkpoints/complete.pth [--json out.json]

``<events dir>`` is one event (a folder of frames) or ``root/<camera>/<event_id>/`` folders. For each
event: stage-1 motion regions, the relevance mask (max over up to ``--frames`` frames), per-region
score = mean relevance inside the region, relevant if above the threshold, and the alert decision
(any relevant region). One line per event is printed; ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


class RelevanceMaskPredictor:
    """``predict(frames, motion) -> dict`` with region scores, relevance decisions and the alert.

    ``frames``: [T, H, W, 3] RGB uint8 (one event; a single frame works too) and ``motion``: the
    :class:`datamodules.motion.MotionResult` of the event. Without ``model_path`` a network is
    built from ``net`` (tests) or untrained defaults.
    """

    def __init__(self, model_path: str | Path | None = None, net: Any = None, image_size: int = 224,
                 region_threshold: float = 0.5, max_frames: int = 4, device: str = "cpu"):
        import torch

        from datamodules.motion import MotionDetector
        from lightning_modules.nets.relevance import NET_FORMAT, RelevanceNet
        from suite.errors import UserError

        self.torch = torch
        motion_settings: dict[str, Any] = {}
        if model_path is not None:
            from suite.checkpoints import load_checkpoint

            payload = load_checkpoint(model_path)
            if payload.get("format") != NET_FORMAT or "image_size" not in payload:
                raise UserError(f"{model_path} is not a complete relevance model (checkpoints/complete.pth of a "
                                "relevance_segmentation run)")
            net = RelevanceNet(backbone=payload["backbone"], in_channels=payload["in_channels"],
                               encoder_depth=payload["encoder_depth"], decoder_channels=payload["decoder_channels"])
            net.load_state_dict(payload["state_dict"])
            image_size = int(payload["image_size"])
            region_threshold = float(payload["region_threshold"])
            motion_settings = dict(payload.get("motion") or {})
        self.net = (net if net is not None else RelevanceNet()).eval().to(device)
        self.image_size, self.region_threshold = image_size, region_threshold
        self.max_frames, self.device = max_frames, device
        self.detector = MotionDetector(**motion_settings)

    def relevance_mask(self, frames: np.ndarray) -> np.ndarray:
        """[H, W] float relevance in [0, 1] at the frames' size (max over sampled frames)."""
        import cv2

        torch = self.torch
        frames = frames[None] if frames.ndim == 3 else frames
        picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), self.max_frames)).round().astype(int))
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        batch = np.stack([(cv2.resize(frames[k], (self.image_size, self.image_size),
                                      interpolation=cv2.INTER_AREA) / 255.0 - mean) / std for k in picks])
        x = torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32)).to(self.device)
        with torch.inference_mode():
            prob = torch.sigmoid(self.net(x)).amax(dim=0)[0].cpu().numpy()
        h, w = frames.shape[1:3]
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)

    def decide(self, relevance: np.ndarray, motion: Any) -> dict[str, Any]:
        """Region scores from a relevance mask and a motion result (labels + regions)."""
        regions = []
        for r in motion.regions:
            inside = motion.labels == r.id
            score = float(relevance[inside].mean()) if inside.any() else 0.0
            regions.append({**r.to_dict(), "score": score, "relevant": score > self.region_threshold})
        relevant = sum(r["relevant"] for r in regions)
        return {"regions": regions, "num_regions": len(regions), "num_relevant": relevant, "alert": relevant > 0}

    def predict(self, frames: np.ndarray, motion: Any) -> dict[str, Any]:
        return self.decide(self.relevance_mask(frames), motion)

    def predict_event(self, frame_paths: list[Path]) -> dict[str, Any]:
        from datamodules.motion import read_frames

        frames = read_frames(frame_paths)
        return self.predict(frames, self.detector.detect(frames))


def find_events(root: Path) -> list[tuple[str, list[Path]]]:
    from datamodules.images import list_images
    from suite.errors import DataError

    if not root.is_dir():
        raise DataError(f"events folder not found: {root}")
    own = list_images(root)
    if own:
        return [(root.name, own)]
    events = []
    for cam in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        frames = list_images(cam)
        if frames:
            events.append((cam.name, frames))
            continue
        for folder in sorted(p for p in cam.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            frames = list_images(folder)
            if frames:
                events.append((f"{cam.name}/{folder.name}", frames))
    if not events:
        raise DataError(f"no event folders with frames under {root}")
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.relevance",
                                     description="Alert decision per motion event with a trained relevance model.")
    parser.add_argument("events", type=Path, help="an event folder of frames, or root/<camera>/<event_id>/")
    parser.add_argument("--model", type=Path, required=True, help="checkpoints/complete.pth of a relevance run")
    parser.add_argument("--json", type=Path, default=None, help="write all decisions here")
    parser.add_argument("--frames", type=int, default=4, help="frames per event the network sees")
    args = parser.parse_args(argv)

    from suite.errors import UserError
    from suite.io import atomic_write_json

    try:
        predictor = RelevanceMaskPredictor(args.model, max_frames=args.frames)
        results = {}
        for event_id, frames in find_events(args.events):
            result = predictor.predict_event(frames)
            results[event_id] = result
            scores = ", ".join(f"{r['score']:.2f}" for r in result["regions"])
            decision = "ALERT" if result["alert"] else "ignore"
            print(f"{event_id}: {decision} ({result['num_relevant']}/{result['num_regions']} relevant regions"
                  f"{'; scores ' + scores if scores else ''})")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
