"""LEGO classifier inference with onnxruntime: the seed's ``ClassifierLoader.predict(image_bytes)``.

Depends only on numpy, OpenCV and onnxruntime, so the file is copied into the Pi bundle as is.
A bundle folder holds::

    models/lego_classifier.onnx   input "image" (N, 3, S, S) float RGB 0-255; outputs part_logits, color_logits
    config/part_names.json        index -> part id (a list)
    config/color_names.json       index -> colour id (a list)
    config/preprocessing.json     size, resize, colour order, input/output names

Normalisation (ImageNet mean/std) is inside the graph, so preprocessing is decode -> RGB -> resize.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MODEL_FILE = "models/lego_classifier.onnx"
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}


class ImageDecodeError(ValueError):
    """The bytes are not an image OpenCV can decode."""


def decode_image(image_bytes: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes (JPEG, PNG, BMP, WebP, TIFF ...)."""
    if not image_bytes:
        raise ImageDecodeError("empty upload: no image bytes")
    array = np.frombuffer(image_bytes, dtype=np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError("the data is not a decodable image (JPEG, PNG, BMP, WebP or TIFF expected)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def preprocess(rgb: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """(1, 3, S, S) float32 RGB 0-255: the training pipeline's evaluation transform (a square resize)."""
    size = int(config["size"])
    interpolation = INTERPOLATIONS[config.get("interpolation", "linear")]
    resized = cv2.resize(rgb, (size, size), interpolation=interpolation)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None].astype(np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class ClassifierLoader:
    """Load a bundle once; ``predict`` an image's part and colour with their confidences."""

    def __init__(self, bundle_dir: str | Path, model_path: str | Path | None = None, threads: int = 1):
        import onnxruntime as ort

        self.bundle_dir = Path(bundle_dir)
        self.config = self._json("config/preprocessing.json")
        self.part_names: list[str] = self._json("config/part_names.json")
        self.color_names: list[str] = self._json("config/color_names.json")
        model = Path(model_path) if model_path else self.bundle_dir / self.config.get("model", MODEL_FILE)
        if not model.is_file():
            raise FileNotFoundError(f"model not found: {model}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_path = model
        self._check_input_shape()

    def _check_input_shape(self) -> None:
        """A model exported for other inputs than the bundle's preprocessing gives garbage or an ORT error
        at the first request; refuse it at load time instead, naming both shapes."""
        shape = list(self.session.get_inputs()[0].shape)
        size = int(self.config["size"])
        expected = [None, 3, size, size]
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(fixed) != 4 or any(f is not None and f != e for f, e in zip(fixed[1:], expected[1:], strict=True)):
            raise ValueError(
                f"{self.model_path}: input '{self.input_name}' has shape {shape}, but the bundle's "
                f"preprocessing (config/preprocessing.json, size {size}) feeds [batch, 3, {size}, {size}]"
            )

    def _json(self, rel: str) -> Any:
        path = self.bundle_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"bundle file missing: {path}")
        return json.loads(path.read_text())

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))

    def predict_array(self, rgb: np.ndarray) -> dict[str, Any]:
        logits = self.logits(preprocess(rgb, self.config))
        result: dict[str, Any] = {}
        for task, names in (("part", self.part_names), ("color", self.color_names)):
            out = logits.get(f"{task}_logits")
            if out is None:
                continue
            prob = softmax(out[0].astype(np.float64))
            index = int(prob.argmax())
            result[f"{task}_id"] = names[index]
            result[f"{task}_confidence"] = round(float(prob[index]), 6)
        return result

    def predict(self, image_bytes: bytes) -> dict[str, Any]:
        """``{part_id, part_confidence, color_id, color_confidence}`` (the heads the model has)."""
        return self.predict_array(decode_image(image_bytes))
