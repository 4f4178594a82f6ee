"""Pictures of relevance decisions, without torch: the seed's comparison panels.

Used by the test of a run (``comparison.jpg``: motion detection | untrained | trained, in
``lightning_modules/relevance.py``) and by the predictor (one picture per event: motion detection |
relevance). Boxes: yellow = a motion region (no decision), green = relevant, red = irrelevant, with
each region's score. All images are ``H x W x 3`` uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from deploy.relevance_rule import RegionDecision, resize_relevance

MOTION_BOX = (255, 255, 0)
RELEVANT_BOX = (0, 220, 0)
IRRELEVANT_BOX = (230, 0, 0)


def draw_regions(image: np.ndarray, boxes: Sequence[Sequence[float]], decision: RegionDecision | None) -> np.ndarray:
    """``image`` with one box (x, y, width, height) per region; coloured and scored by ``decision``."""
    out = image.copy()
    for i, box in enumerate(boxes):
        x, y, w, h = (int(round(v)) for v in box)
        color = MOTION_BOX if decision is None else (RELEVANT_BOX if decision.relevant[i] else IRRELEVANT_BOX)
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        if decision is not None:
            cv2.putText(out, f"{decision.scores[i]:.2f}", (x + 2, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        color, 1)
    return out


def motion_panel(frame: np.ndarray, motion: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Stage 1: the frame with its moving pixels tinted blue and the motion regions boxed."""
    out = frame.copy()
    moving = np.asarray(motion) > 0
    out[moving] = (0.5 * out[moving] + [0, 0, 127]).astype(np.uint8)
    return draw_regions(out, boxes, None)


def relevance_panel(frame: np.ndarray, prob: np.ndarray, boxes: Sequence[Sequence[float]],
                    decision: RegionDecision) -> np.ndarray:
    """The relevance map as a heat overlay (resized to the frame) with the decided regions."""
    prob = resize_relevance(prob, frame.shape[:2])
    heat = cv2.applyColorMap((np.clip(prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    blend = (0.55 * frame + 0.45 * heat).astype(np.uint8)
    return draw_regions(blend, boxes, decision)


def titled_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str]) -> np.ndarray:
    """Rows of equally sized panels under a white header naming the columns."""
    lines = [np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0))) for p in row], axis=1) for row in rows]
    header = np.full((18, lines[0].shape[1], 3), 255, np.uint8)
    width = lines[0].shape[1] // len(titles)
    for i, title in enumerate(titles):
        cv2.putText(header, title, (i * width + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return np.ascontiguousarray(np.concatenate([header, *lines], axis=0))


def scaled_boxes(regions: Sequence[dict[str, Any]], scale: float) -> list[tuple[float, ...]]:
    """The regions' boxes (``box``: x, y, width, height) multiplied by ``scale``."""
    return [tuple(float(v) * scale for v in r["box"]) for r in regions]
