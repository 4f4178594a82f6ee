"""Score the relevance task's stage-1 motion detector against CDnet-style ground truth.

    python -m tools.score_motion <sequence dir or folder of sequences> [--json scores.json]
        [--event-frames N] [--threshold 30] [--baseline mog2|median]

A sequence is ``<seq>/input/*.jpg|png`` with ``<seq>/groundtruth/gt*.png`` paired by the number at
the end of the file name (255 = moving, 0 = background, 170 = unknown). As in CDnet, pixels marked
170 are ignored, ``ROI.bmp`` (when present) limits the evaluated pixels and ``temporalROI.txt``
(first and last evaluated frame) the evaluated frames. Counts are summed over all evaluated
frames, then precision, recall and F-measure are computed. With ``--event-frames N`` the sequence
is cut into events of N frames, each detected on its own as training does; by default the whole
sequence is one event (its background is estimated from all frames).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from suite.outputs import output_file_arg

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
UNKNOWN = 170


def frame_number(path: Path) -> int | None:
    match = re.search(r"(\d+)$", path.stem)
    return int(match.group(1)) if match else None


def find_sequences(root: Path) -> list[Path]:
    if (root / "input").is_dir():
        return [root]
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and (p / "input").is_dir()) if root.is_dir() else []
    if not seqs:
        from suite.errors import DataError

        raise DataError(f"no sequence (a folder with input/) at {root}")
    return seqs


def load_sequence(seq: Path) -> tuple[list[Path], list[Path], np.ndarray | None, tuple[int, int] | None]:
    """(frame paths, ground-truth paths, spatial ROI or None, temporal ROI or None)."""
    import cv2

    from suite.errors import DataError

    frames = sorted(p for p in (seq / "input").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    gt_dir = seq / "groundtruth"
    if not gt_dir.is_dir():
        raise DataError(f"{seq}: no groundtruth/ folder to score against")
    by_number = {frame_number(p): p for p in gt_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    gts = []
    for frame in frames:
        gt = by_number.get(frame_number(frame))
        if gt is None:
            raise DataError(f"{seq}: no ground truth for frame {frame.name} in {gt_dir}")
        gts.append(gt)
    roi = None
    if (seq / "ROI.bmp").is_file():
        roi_img = cv2.imread(str(seq / "ROI.bmp"), cv2.IMREAD_GRAYSCALE)
        if roi_img is None:
            raise DataError(f"cannot read {seq / 'ROI.bmp'}")
        roi = roi_img > 0
    temporal = None
    if (seq / "temporalROI.txt").is_file():
        first, last = (int(v) for v in (seq / "temporalROI.txt").read_text().split()[:2])
        temporal = (first, last)
    return frames, gts, roi, temporal


def counts(pred: np.ndarray, gt: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """[tp, fp, fn, tn] of boolean predictions against one ground-truth image."""
    valid = gt != UNKNOWN
    if roi is not None:
        valid &= roi
    fg = gt == 255
    p = pred & valid
    return np.array([(p & fg).sum(), (p & ~fg).sum(), (~pred & fg & valid).sum(), (~pred & ~fg & valid).sum()],
                    np.int64)


def scores(total: np.ndarray) -> dict[str, float]:
    tp, fp, fn, _ = (int(v) for v in total)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f_measure": f, "tp": tp, "fp": fp, "fn": fn}


def predict_sequence(frames: np.ndarray, method: str, detector: Any, event_frames: int | None) -> np.ndarray:
    """[T, H, W] bool masks of the whole sequence by ``method``."""
    import cv2

    if method == "mog2":
        mog = cv2.createBackgroundSubtractorMOG2()
        return np.stack([mog.apply(cv2.cvtColor(f, cv2.COLOR_RGB2BGR)) > 0 for f in frames])
    if method == "median":
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.int16)
        return np.abs(gray - np.median(gray, axis=0)) > 25
    if not event_frames:
        return detector.frame_masks(frames)
    out = []
    for start in range(0, len(frames), event_frames):
        chunk = frames[start:start + event_frames]
        if len(chunk) < 2:  # a trailing single frame joins the previous event's background
            out.append(detector.frame_masks(frames[start - 1:start + 1])[1:])
        else:
            out.append(detector.frame_masks(chunk))
    return np.concatenate(out)


def score_sequence(seq: Path, method: str, detector: Any, event_frames: int | None) -> dict[str, Any]:
    from datamodules.images import read_mask
    from datamodules.motion import read_frames

    frames, gts, roi, temporal = load_sequence(seq)
    stack = read_frames(frames)
    masks = predict_sequence(stack, method, detector, event_frames)
    total = np.zeros(4, np.int64)
    evaluated = 0
    for i, (frame, gt_path) in enumerate(zip(frames, gts, strict=True)):
        number = frame_number(frame)
        if temporal is not None and number is not None and not temporal[0] <= number <= temporal[1]:
            continue
        gt = read_mask(gt_path)
        if gt.shape != masks[i].shape:
            from suite.errors import DataError

            raise DataError(f"ground truth {gt_path} is {gt.shape[::-1]}, frame {frame} is {masks[i].shape[::-1]}")
        total += counts(masks[i], gt, roi)
        evaluated += 1
    return {"sequence": seq.name, "frames": evaluated, "method": method, **scores(total)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.score_motion",
        description="Precision, recall and F-measure of the motion detector on CDnet-style sequences "
                    "(170 = unknown is ignored; ROI.bmp and temporalROI.txt are honoured).")
    parser.add_argument("path", type=Path, help="a sequence (with input/ and groundtruth/) or a folder of them")
    parser.add_argument("--json", type=output_file_arg, default=None, help="write the scores as JSON to this file")
    parser.add_argument("--event-frames", type=int, default=None,
                        help="cut each sequence into events of N frames detected separately (default: whole sequence)")
    parser.add_argument("--method", choices=["detector", "mog2", "median"], default="detector",
                        help="detector = the suite's MotionDetector; mog2 / median = reference baselines")
    parser.add_argument("--threshold", type=int, default=30, help="MotionDetector threshold (0-255)")
    parser.add_argument("--max-side", type=int, default=320, help="MotionDetector working resolution (0 = full)")
    args = parser.parse_args(argv)

    from datamodules.motion import MotionDetector
    from suite.errors import UserError
    from suite.io import atomic_write_json

    try:
        detector = MotionDetector(threshold=args.threshold, max_side=args.max_side or None)
        rows = [score_sequence(seq, args.method, detector, args.event_frames) for seq in find_sequences(args.path)]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'sequence':<14}{'frames':>7}{'precision':>11}{'recall':>9}{'f_measure':>11}   ({args.method})")
    for row in rows:
        print(f"{row['sequence']:<14}{row['frames']:>7}{row['precision']:>11.4f}{row['recall']:>9.4f}"
              f"{row['f_measure']:>11.4f}")
    result = {"method": args.method, "event_frames": args.event_frames, "detector": detector.settings(),
              "sequences": {r["sequence"]: r for r in rows}}
    if len(rows) == 1:
        result.update({k: rows[0][k] for k in ("precision", "recall", "f_measure")})
    else:
        total = np.array([[r["tp"], r["fp"], r["fn"], 0] for r in rows]).sum(axis=0)
        result.update({k: v for k, v in scores(total).items() if k in ("precision", "recall", "f_measure")})
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from suite.errors import run_guarded

    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback
