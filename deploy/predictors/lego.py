"""LEGO predictor: images -> part and colour with their confidences (top-k), as the service answers.

    python predict.py <lego run | its bundle> <images or folders ...> [top_k=5]

Inputs: image files, or folders searched recursively for images (png, jpg, bmp, tif). Each image is
decoded to RGB and stretched to the run's square (``data.image_size``, linear interpolation: the
evaluation transform of training); the graph normalises and gives a softmax per head.
``predictions.csv``: ``pred`` and ``score_<class>`` of the primary head (part when the model has one,
else colour), then per head ``<head>_pred``, ``<head>_confidence`` and ``<head>_top_k``
(``id:confidence`` pairs separated by ``;``). ``predict_bytes`` answers like the Pi service
(``deploy/lego_service.py``): ``part_id``, ``part_confidence``, ``color_id``, ``color_confidence``,
plus ``part_top_k``/``color_top_k`` lists.

Imports numpy and OpenCV only (no torch): it runs an ONNX bundle on a Raspberry Pi. The Pi bundle of
``export.py`` (``pi_bundle/``) keeps its own loader, ``deploy/onnx_predictor.py``, whose decoding
and resize this predictor reuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.images import read_image
from deploy.onnx_predictor import ImageDecodeError, decode_image, preprocess
from deploy.predictors.base import ItemResult, Predictor, find_images
from suite.contracts import PredictionRow
from suite.errors import ConfigError, DataError

GRAPH = "model"
HEADS = ("part", "color")


class LegoPredictor(Predictor):
    """Part and colour, top-k, of each image with a lego run or its bundle."""

    task = "lego"
    defaults = {"top_k": 5}  # classes listed per head with their confidences

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        super().__init__(backend, options)
        if int(self.options["top_k"]) < 1:
            raise ConfigError(f"predict option top_k must be >= 1, got {self.options['top_k']}")
        run = self.meta.get("options", {})
        self.size = int(run["image_size"])
        self.resize = {"size": self.size, "interpolation": run.get("interpolation", "linear")}
        self.names = {h["name"]: list(h["classes"]) for h in self.meta["heads"] if h["name"] in HEADS}
        self.heads = [h for h in HEADS if h in self.names]
        self.outputs = list(self.meta["graphs"][GRAPH]["outputs"])

    # -- the model ---------------------------------------------------------------------------------
    def probabilities(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Head -> class probabilities ``[C]`` of one RGB uint8 image."""
        out = self.backend.run(GRAPH, preprocess(rgb, self.resize))
        return {name.removesuffix("_prob"): np.asarray(out[name][0], np.float64) for name in self.outputs}

    def top_k(self, head: str, prob: np.ndarray) -> list[tuple[str, float]]:
        order = np.argsort(-prob, kind="stable")[: int(self.options["top_k"])]
        return [(self.names[head][i], float(prob[i])) for i in order]

    def classify(self, rgb: np.ndarray) -> dict[str, Any]:
        """The service's answer for one image: ``<head>_id``, ``<head>_confidence``, ``<head>_top_k``."""
        result: dict[str, Any] = {}
        for head, prob in self.probabilities(rgb).items():
            ranked = self.top_k(head, prob)
            result[f"{head}_id"] = ranked[0][0]
            result[f"{head}_confidence"] = round(ranked[0][1], 6)
            result[f"{head}_top_k"] = [{"id": name, "confidence": round(p, 6)} for name, p in ranked]
        return result

    # -- inputs and outputs ------------------------------------------------------------------------
    def discover(self, paths: Sequence[Path]) -> list[tuple[Path, str]]:
        """``(image, item id)`` pairs: a file is its own name, a folder's images are named relative to it."""
        return find_images(paths)

    def predict_item(self, item: tuple[Path, str]) -> ItemResult:
        path, item_id = item
        probs = self.probabilities(read_image(path))
        primary = self.heads[0]
        extras: dict[str, Any] = {}
        for head in self.heads:
            ranked = self.top_k(head, probs[head])
            extras[f"{head}_pred"] = ranked[0][0]
            extras[f"{head}_confidence"] = round(ranked[0][1], 6)
            extras[f"{head}_top_k"] = ";".join(f"{name}:{p:.4f}" for name, p in ranked)
        row = PredictionRow(item_id=item_id, pred=extras[f"{primary}_pred"],
                            scores=dict(zip(self.names[primary], probs[primary].tolist(), strict=True)),
                            extras=extras)
        return ItemResult(rows=[row])

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        out: dict[str, Any] = {"images": len(rows), "top_k": int(self.options["top_k"])}
        for head in self.heads:
            confidences = [float(r.extras[f"{head}_confidence"]) for r in rows]
            out[f"{head}_mean_confidence"] = round(float(np.mean(confidences)), 4) if confidences else 0.0
        return out

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        try:
            rgb = decode_image(data)
        except ImageDecodeError as err:
            raise DataError(f"{filename or 'upload'}: {err}") from None
        return self.classify(rgb)
