"""Confusion matrix and reliability diagram of the test predictions (predictions_agg.csv's label/pred/score_*)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from suite.contracts import score_columns
from suite.report.figures import Section, figure_md, save
from suite.report.run import RunFacts, numeric

CALIBRATION_BINS = 10
MAX_CLASSES_SHOWN = 30  # beyond this a confusion matrix is unreadable; the pair table says more


def labelled(predictions: pd.DataFrame | None) -> pd.DataFrame:
    """Rows with both a label and a prediction (unknown labels are not scored)."""
    if predictions is None or not {"label", "pred"} <= set(predictions.columns):
        return pd.DataFrame()
    return predictions[(predictions["label"] != "") & (predictions["pred"] != "")]


def class_order(run: RunFacts, frame: pd.DataFrame) -> list[str]:
    """Classes in the order of the score columns (the head's order), then any other label seen."""
    names = list(score_columns(frame.columns))
    seen = sorted(set(frame["label"]) | set(frame["pred"]))
    return names + [c for c in seen if c not in names] if names else seen


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE over equal-width confidence bins: sum of |accuracy - confidence| weighted by the bin's share.

    By hand: scikit-learn has the curve but not the ECE, and torchmetrics would pull torch into the report.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def _confusion_figure(truth: pd.Series, pred: pd.Series, classes: list[str], folder: Path, name: str,
                      what: str) -> str:
    """The confusion matrix of one head as Markdown (picture and caption)."""
    matrix = confusion_matrix(truth, pred, labels=classes)
    size = 2.2 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(ax=ax, cmap="Blues", colorbar=False,
                                                                 xticks_rotation=45 if len(classes) > 4 else 0)
    correct = int(np.trace(matrix))
    ax.set_title(f"{what}, test split: {correct}/{matrix.sum()} right", fontsize=10)
    link = save(fig, folder, name)
    recalls = [f"{c} {matrix[i, i] / matrix[i].sum():.2f}" for i, c in enumerate(classes) if matrix[i].sum()]
    caption = (f"Confusion matrix of the {what}: {len(truth)} labelled test item(s) (rows: true class, columns: "
               f"predicted). Accuracy {correct / max(matrix.sum(), 1):.3f}; recall per class: {', '.join(recalls)}.")
    return figure_md(link, caption)


def _other_heads(frame: pd.DataFrame) -> list[str]:
    """Heads written as ``<head>_true``/``<head>_pred`` columns besides the headline label/pred (lego's color)."""
    heads = []
    for column in frame.columns:
        head = column[:-len("_true")] if column.endswith("_true") else None
        if head and f"{head}_pred" in frame.columns:
            same = frame[column].equals(frame["label"]) and frame[f"{head}_pred"].equals(frame["pred"])
            if not same:
                heads.append(head)
    return heads


def confusion_section(run: RunFacts, folder: Path) -> Section | None:
    frame = labelled(run.predictions)
    if frame.empty:
        return None
    classes = class_order(run, frame)
    if len(classes) > MAX_CLASSES_SHOWN:
        return Section("Confusion matrix", f"{len(classes)} classes: too many to draw; see the breakdown below.")
    body = _confusion_figure(frame["label"], frame["pred"], classes, folder, "confusion", "headline head")
    for head in _other_heads(run.predictions):
        part = run.predictions[(run.predictions[f"{head}_true"] != "") & (run.predictions[f"{head}_pred"] != "")]
        names = sorted(set(part[f"{head}_true"]) | set(part[f"{head}_pred"]), key=lambda v: (len(v), v))
        if len(part) and len(names) <= MAX_CLASSES_SHOWN:
            body += "\n" + _confusion_figure(part[f"{head}_true"], part[f"{head}_pred"], names, folder,
                                             f"confusion_{head}", f"{head} head")
    return Section("Confusion matrix", body)


def calibration_section(run: RunFacts, folder: Path) -> Section | None:
    """Reliability diagram: binary heads on the positive class's score, multi-class heads on the top-1 confidence."""
    frame = labelled(run.predictions)
    scores = score_columns(frame.columns) if not frame.empty else {}
    if len(scores) < 2:
        return None
    names = list(scores)
    probs = np.column_stack([numeric(frame, scores[n]).to_numpy(float) for n in names])
    keep = np.isfinite(probs).all(axis=1) & frame["label"].isin(names).to_numpy()
    if keep.sum() < 2:
        return None
    probs, labels, preds = probs[keep], frame["label"].to_numpy()[keep], frame["pred"].to_numpy()[keep]
    if len(names) == 2:
        positive = names[1]
        truth = (labels == positive).astype(float)
        confidence = probs[:, 1]
        what = f"score of '{positive}' against the share that is '{positive}'"
    else:
        truth = (labels == preds).astype(float)
        confidence = probs.max(axis=1)
        what = "top-1 confidence against top-1 accuracy"
    ece = expected_calibration_error((labels == preds).astype(float) if len(names) > 2 else truth, confidence)
    frac, mean = calibration_curve(truth, confidence, n_bins=CALIBRATION_BINS, strategy="uniform")
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.2, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfectly calibrated")
    ax.plot(mean, frac, "o-", color="tab:blue", label=f"model (ECE {ece:.3f})")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.hist(confidence, bins=np.linspace(0, 1, CALIBRATION_BINS + 1), color="tab:gray")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("items", fontsize=8)
    link = save(fig, folder, "calibration")
    caption = (f"Reliability diagram of {len(truth)} test item(s): {what}, in {CALIBRATION_BINS} equal-width bins "
               f"({len(mean)} non-empty); below, how many items fall in each bin. "
               f"Expected calibration error (ECE) {ece:.3f}.")
    return Section("Calibration", figure_md(link, caption))
