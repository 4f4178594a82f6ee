"""Per-class and per-group tables of the test predictions: whatever columns predictions_agg.csv holds."""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from suite.report.classification import class_order, labelled
from suite.report.figures import Section, table
from suite.report.run import RunFacts, numeric

# columns that group items, in the order they are tried (behavior: video_id/camera, lego: source, violence:
# group = source video, relevance: camera)
GROUP_COLUMNS = ("source", "subset", "camera", "video_id", "group")
# per-item scores a task writes (segmentation f1/iou; relevance region scores) averaged per group
ITEM_SCORES = ("f1", "iou", "foreground_true", "foreground_pred", "triplet_right", "correct", "correct_tta",
               "part_correct", "color_correct")
MAX_GROUP_ROWS = 20


def _per_class(run: RunFacts, frame: pd.DataFrame) -> str:
    classes = class_order(run, frame)
    p, r, f, n = precision_recall_fscore_support(frame["label"], frame["pred"], labels=classes, zero_division=0)
    rows = [[c, int(n[i]), p[i], r[i], f[i]] for i, c in enumerate(classes)]
    return "**Per class** (test split):\n\n" + table(["class", "items", "precision", "recall", "F1"], rows)


def _per_group(frame: pd.DataFrame, column: str, has_labels: bool) -> str | None:
    values = frame[column]
    groups = values[values != ""].unique()
    if not 2 <= len(groups) <= 10_000 or (values != "").sum() < 1.5 * len(groups):
        return None  # one group says nothing; groups of about one item each are the item table again
    scores = [c for c in ITEM_SCORES if c in frame.columns]
    rows = []
    for name, part in frame[values != ""].groupby(column, sort=False):
        row: list = [name, len(part)]
        if has_labels:
            known = part[(part["label"] != "") & (part["pred"] != "")]
            row.append((known["label"] == known["pred"]).mean() if len(known) else None)
        row += [numeric(part, c).mean() for c in scores]
        rows.append(row)
    sort_at = 2 if has_labels else (2 if scores else 1)
    rows.sort(key=lambda r: (r[sort_at] is None, r[sort_at] if r[sort_at] is not None else 0))
    shown = rows[:MAX_GROUP_ROWS]
    header = [column, "items"] + (["accuracy"] if has_labels else []) + [f"mean {c}" for c in scores]
    more = f" (the {MAX_GROUP_ROWS} worst of {len(rows)})" if len(rows) > MAX_GROUP_ROWS else ""
    return f"**Per {column}**{more}, worst first:\n\n" + table(header, shown)


def breakdown_section(run: RunFacts) -> Section | None:
    frame = run.predictions
    if frame is None or frame.empty:
        return Section("Breakdown", "No predictions_agg.csv: the run wrote no test predictions.")
    parts = []
    known = labelled(frame)
    if not known.empty:
        parts.append(_per_class(run, known))
    shown: list[str] = []
    for column in GROUP_COLUMNS:
        # behavior's group is its video_id: one table per distinct grouping
        if column in frame.columns and not any(frame[column].equals(frame[other]) for other in shown):
            shown.append(column)
            text = _per_group(frame, column, not known.empty)
            if text:
                parts.append(text)
    if not parts:
        return None
    return Section("Breakdown", "\n".join(parts))
