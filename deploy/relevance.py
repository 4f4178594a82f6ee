"""Relevance decisions for motion events from the command line, and the seed's predictor class.

    python -m deploy.relevance <events dir> --model <run dir | bundle | run/checkpoints/complete.pth> [--json out.json]

``<events dir>`` is one event (a folder of frames), ``root/<camera>/<event_id>/`` folders, a
``<camera>/input/`` sequence, a ``.zip`` of frames or a video: the inputs of
``python predict.py`` (``deploy/predictors/relevance.py``), which does the work. One line per event
is printed; ``--json`` writes every decision. ``--model`` takes, besides a run dir or its exported
bundle, the ``checkpoints/complete.pth`` file a relevance_segmentation run writes.

:class:`RelevanceMaskPredictor` is that predictor over a ``complete.pth`` file or a network in
memory (tests); it keeps the interface of the first version (``predict(frames, motion) -> dict``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends import TorchBackend, file_sha256, open_backend
from deploy.predictors.relevance import RelevancePredictor


class PayloadBackend(TorchBackend):
    """A relevance network in memory (or from ``complete.pth``) with the bundle's graph and manifest,
    so that it runs through the same predictor as a run dir or a bundle (PyTorch; ``run`` is
    :class:`~deploy.backends.TorchBackend`'s)."""

    def __init__(self, net: Any, image_size: int = 224, threshold: float = 0.5, region_threshold: float = 0.5,
                 eval_frames: int = 4, event_frames: int = 16, motion: dict[str, Any] | None = None,
                 hashes: dict[str, str] | None = None):
        # not TorchBackend.__init__: there is no run dir to load
        from lightning_modules.relevance import CLASSES, relevance_graph, relevance_options
        from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
        from suite.contracts import DataSpec, Head, InputSpec
        from suite.inference import bundle_metadata

        graph = relevance_graph(net.eval(), image_size)
        spec = DataSpec(task="relevance", heads=(Head("mask", CLASSES, positive=1),),
                        input=InputSpec("image", (3, image_size, image_size), IMAGENET_MEAN, IMAGENET_STD))
        options = relevance_options(image_size, threshold, region_threshold, eval_frames, event_frames, motion or {})
        self.networks = {graph.name: graph}
        self.meta = bundle_metadata(spec, [graph], options)
        self.hashes = hashes or {}

    @classmethod
    def from_file(cls, path: str | Path) -> PayloadBackend:
        """The network and facts of a ``checkpoints/complete.pth`` file."""
        from lightning_modules.nets.relevance import net_from_payload
        from suite.checkpoints import load_checkpoint
        from suite.errors import UserError

        payload = load_checkpoint(path)
        if "image_size" not in payload:
            raise UserError(f"{path} is not a complete relevance model (checkpoints/complete.pth of a "
                            "relevance_segmentation run)")
        return cls(net_from_payload(payload, path), image_size=int(payload["image_size"]),
                   threshold=float(payload.get("threshold", 0.5)),
                   region_threshold=float(payload["region_threshold"]),
                   eval_frames=int(payload.get("eval_frames", 4)), motion=dict(payload.get("motion") or {}),
                   hashes={"complete.pth": file_sha256(path)})


class RelevanceMaskPredictor(RelevancePredictor):
    """The seed's ``RelevanceMaskPredictor(model_path=...)``: :class:`RelevancePredictor` over a
    ``complete.pth`` file, or over ``net`` (untrained defaults when neither is given).

    ``predict(frames, motion)``, ``decide(relevance, motion)`` and ``predict_event(paths)`` return
    dicts: ``regions`` (with ``score`` and ``relevant``), ``num_regions``, ``num_relevant``, ``alert``.
    """

    def __init__(self, model_path: str | Path | None = None, net: Any = None, image_size: int = 224,
                 region_threshold: float = 0.5, max_frames: int | None = None, device: str = "cpu"):
        if device != "cpu":
            raise ValueError("RelevanceMaskPredictor runs on the CPU; use predict.py with a bundle for deployment")
        if model_path is not None:
            backend = PayloadBackend.from_file(model_path)
        else:
            from lightning_modules.nets.segmentation import UNet

            backend = PayloadBackend(net if net is not None else UNet(), image_size=image_size,
                                     region_threshold=region_threshold)
        super().__init__(backend, {"frames": max_frames or 0})

    @property
    def max_frames(self) -> int:
        return self.frames

    def relevance_mask(self, frames: np.ndarray) -> np.ndarray:
        """[H, W] float relevance in [0, 1] at the frames' size (max over sampled frames)."""
        from deploy.relevance_rule import resize_relevance

        return resize_relevance(self.relevance(frames), frames.shape[-3:-1])

    def decide(self, relevance: np.ndarray, motion: Any, motion_fraction: float | None = None) -> Any:
        return super().decide(np.asarray(relevance, np.float32), motion, motion_fraction).to_dict()

    def predict(self, frames: np.ndarray, motion: Any) -> dict[str, Any]:
        return self.decide(self.relevance(frames), motion)

    def predict_event(self, frame_paths: list[Path]) -> dict[str, Any]:
        from datamodules.motion import read_frames

        frames = read_frames(frame_paths)
        return self.predict(frames, self.detector.detect(frames))


def open_predictor(model: Path, frames: int | None = None, threads: int = 1) -> RelevancePredictor:
    """The predictor over ``--model``: a run dir or bundle (as ``predict.py``), or a ``complete.pth``."""
    options = {"frames": frames} if frames else {}
    if model.is_file():
        return RelevancePredictor(PayloadBackend.from_file(model), options)
    return RelevancePredictor(open_backend(model, threads=threads), options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.relevance",
                                     description="Alert decision per motion event with a trained relevance model.")
    parser.add_argument("events", type=Path, help="an event folder of frames, root/<camera>/<event_id>/, a "
                                                  "<camera>/input/ sequence, a .zip of frames or a video")
    parser.add_argument("--model", type=Path, required=True,
                        help="a relevance_segmentation run dir, its exported bundle, or its checkpoints/complete.pth")
    parser.add_argument("--json", type=Path, default=None, help="write all decisions here")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per event the network sees (default: the run's data.eval_frames)")
    args = parser.parse_args(argv)

    from suite.errors import UserError
    from suite.io import atomic_write_json

    try:
        if not args.events.exists():
            raise UserError(f"events not found: {args.events}")
        predictor = open_predictor(args.model, args.frames)
        results = {}
        for event in predictor.discover([args.events]):
            frames = predictor.read_event(event)
            result = predictor.predict(frames, predictor.motion(frames, event.sequence)).to_dict()
            results[event.event_id] = result
            scores = ", ".join(f"{r['score']:.2f}" for r in result["regions"])
            decision = "ALERT" if result["alert"] else "ignore"
            print(f"{event.event_id}: {decision} ({result['num_relevant']}/{result['num_regions']} relevant regions"
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
