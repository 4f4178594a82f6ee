"""Relevance decisions for motion events: ``complete.pth`` of a relevance_segmentation run.

    python -m deploy.relevance <events dir> --model <run>/checkpoints/complete.pth [--json out.json]

``<events dir>`` is one event (a folder of frames) or ``root/<camera>/<event_id>/`` folders. For each
event: stage-1 motion regions, the relevance mask (max over up to ``--frames`` frames), per-region
score = mean relevance inside the region, relevant if above the threshold, and the alert decision
(any relevant region): the sampling, preprocessing and rule of the run's test. One line per event
is printed; ``--json`` writes everything.
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
    built from ``net`` (tests) or untrained defaults. Frames are sampled, preprocessed and decided
    on by the functions the test of a run uses (``datamodules.relevance.sample_frames`` and
    ``preprocess_frames``, ``lightning_modules.nets.relevance.decide_regions``).
    """

    def __init__(self, model_path: str | Path | None = None, net: Any = None, image_size: int = 224,
                 region_threshold: float = 0.5, max_frames: int | None = None, device: str = "cpu"):
        from datamodules.motion import MotionDetector
        from lightning_modules.nets.segmentation import UNet

        motion_settings: dict[str, Any] = {}
        frames = 4
        if model_path is not None:
            from lightning_modules.nets.relevance import net_from_payload
            from suite.checkpoints import load_checkpoint
            from suite.errors import UserError

            payload = load_checkpoint(model_path)
            if "image_size" not in payload:
                raise UserError(f"{model_path} is not a complete relevance model (checkpoints/complete.pth of a "
                                "relevance_segmentation run)")
            net = net_from_payload(payload, model_path)
            image_size = int(payload["image_size"])
            region_threshold = float(payload["region_threshold"])
            frames = int(payload.get("eval_frames", frames))
            motion_settings = dict(payload.get("motion") or {})
        self.net = (net if net is not None else UNet()).eval().to(device)
        self.image_size, self.region_threshold = image_size, region_threshold
        self.max_frames, self.device = max_frames or frames, device
        self.detector = MotionDetector(**motion_settings)

    def preprocess(self, frames: np.ndarray) -> Any:
        """The network's input for an event: its sampled frames, preprocessed as in training."""
        from datamodules.relevance import preprocess_frames, sample_frames

        frames = frames[None] if frames.ndim == 3 else frames
        return preprocess_frames(frames[sample_frames(len(frames), self.max_frames)], self.image_size)

    def relevance_mask(self, frames: np.ndarray) -> np.ndarray:
        """[H, W] float relevance in [0, 1] at the frames' size (max over sampled frames)."""
        from lightning_modules.nets.relevance import event_relevance, resize_relevance

        prob = event_relevance(self.net, self.preprocess(frames).to(self.device)).cpu()
        return resize_relevance(prob, frames.shape[-3:-1]).numpy()

    def decide(self, relevance: np.ndarray, motion: Any) -> dict[str, Any]:
        """Region scores from a relevance mask and a motion result (labels + regions)."""
        import torch

        from lightning_modules.nets.relevance import decide_regions

        decision = decide_regions(torch.from_numpy(np.asarray(relevance, np.float32)),
                                  torch.from_numpy(motion.labels.astype(np.int64)),
                                  [r.id for r in motion.regions], self.region_threshold)
        regions = [{**r.to_dict(), "score": score, "relevant": relevant}
                   for r, score, relevant in zip(motion.regions, decision.scores, decision.relevant, strict=True)]
        relevant = sum(decision.relevant)
        return {"regions": regions, "num_regions": len(regions), "num_relevant": relevant, "alert": decision.alert}

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
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per event the network sees (default: the run's data.eval_frames)")
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
