"""Violence predictor: the violent probability of each short clip, as the run tested it.

A clip is sampled as the run's features were made: ``num_frames`` frames spread evenly over it
(``datamodules.video.uniform_indices``), decoded at ``frame_size`` px; the ``frame_encoder`` graph turns
them into features (rounded to float16 as the feature cache stores them), and the ``sequence_model``
graph scores ``tta_crops`` windows of ``clip_len`` features spread over the clip, averaged (the run's
TTA). One row per clip: the TTA probability as its score, the centre window's beside it. A clip under a
class folder (``fight/``, ``nofight/`` ... as the run's ``data.class_map`` names them) gets that label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from datamodules.video import probe_video, read_frames, tta_positions, uniform_indices
from deploy.predictors.base import ItemResult, Predictor, find_videos, uploaded_video
from suite.contracts import PredictionRow
from suite.errors import ConfigError


class ViolencePredictor(Predictor):
    """Per clip: frames -> features -> TTA windows -> violent probability (module docstring)."""

    task = "violence"
    #: threshold None = the run's (0.5)
    defaults: ClassVar[dict[str, Any]] = {"threshold": None}

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        super().__init__(backend, options)
        run = dict(self.meta.get("options") or {})
        graphs = self.meta["graphs"]
        self.num_frames = int(run.get("num_frames") or 30)
        self.clip_len = int(run.get("clip_len") or graphs["sequence_model"]["input_shape"][1])
        self.tta_crops = max(1, int(run.get("tta_crops") or 5))
        self.frame_size = int(run.get("frame_size") or graphs["frame_encoder"]["input_shape"][2])
        self.float16 = run.get("feature_dtype") == "float16"
        self.positive = int(run.get("positive", 1))
        if self.clip_len > self.num_frames:
            raise ConfigError(f"the bundle's clip_len {self.clip_len} exceeds its num_frames {self.num_frames}")
        threshold = self.options["threshold"]
        try:
            self.options["threshold"] = float(run.get("threshold", 0.5) if threshold in (None, "") else threshold)
        except (TypeError, ValueError):
            raise ConfigError(f"predict option threshold={threshold!r}: expected a number") from None
        if not 0.0 <= self.options["threshold"] <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.options['threshold']}")
        extras = self.meta.get("extras") or {}
        self.folders = {str(k).casefold(): str(v) for k, v in (extras.get("folders") or {}).items()}

    def discover(self, paths: Sequence[Path]) -> list[Path]:
        return find_videos(paths)

    def features(self, path: Path) -> np.ndarray:
        """``[num_frames, D]`` features of a clip, as the feature cache holds them."""
        indices = uniform_indices(probe_video(path).num_frames, self.num_frames)
        frames = read_frames(path, indices, size=(self.frame_size, self.frame_size))  # [F, H, W, 3] uint8
        feats = self.backend.run("frame_encoder", frames.transpose(0, 3, 1, 2).astype(np.float32))["features"]
        return feats.astype(np.float16).astype(np.float32) if self.float16 else feats

    def probabilities(self, path: Path) -> tuple[float, float]:
        """(TTA probability, centre window probability) of the positive class."""
        feats = self.features(path)
        room = len(feats) - self.clip_len
        starts = [int(round(p * room)) for p in tta_positions(self.tta_crops)]
        # the centre window as the data module cuts it (room // 2), scored in the same call as the TTA windows
        windows = np.stack([feats[s:s + self.clip_len] for s in [*starts, room // 2]])
        probs = self.backend.run("sequence_model", windows)["scores"][:, self.positive]
        return float(probs[:-1].mean()), float(probs[-1])

    def predict_item(self, item: Path) -> ItemResult:
        return ItemResult([self._row(item, *self.probabilities(item))])

    def _row(self, path: Path, p_tta: float, p_centre: float) -> PredictionRow:
        classes = self.class_names()
        positive, negative = classes[self.positive], classes[1 - self.positive]
        pred = positive if p_tta >= self.options["threshold"] else negative
        return PredictionRow(item_id=str(path), group=path.parent.name, label=self.folders.get(
            path.parent.name.casefold()), pred=pred, scores={negative: 1.0 - p_tta, positive: p_tta},
            extras={f"prob_{positive}_centre": round(p_centre, 6)})

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        classes = self.class_names()
        positive = classes[self.positive]
        flagged = sum(r.pred == positive for r in rows)
        out: dict[str, Any] = {f"{positive}_clips": flagged, f"{positive}_share": round(flagged / max(len(rows), 1), 4)}
        labelled = [r for r in rows if r.label]
        if labelled:  # clips under class folders: how many the predictor got right
            out["labelled_clips"] = len(labelled)
            out["accuracy"] = round(sum(r.label == r.pred for r in labelled) / len(labelled), 4)
        return out

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        """One uploaded clip: its violent probability (the service enforces size limits)."""
        with uploaded_video(data, filename) as path:
            p_tta, p_centre = self.probabilities(path)
        classes = self.class_names()
        positive, negative = classes[self.positive], classes[1 - self.positive]
        return {"task": self.task, "filename": filename, "pred": positive if p_tta >= self.options["threshold"]
                else negative, "scores": {negative: round(1.0 - p_tta, 6), positive: round(p_tta, 6)},
                f"prob_{positive}_centre": round(p_centre, 6), "threshold": self.options["threshold"]}
