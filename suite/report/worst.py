"""The worst test items as pictures, per task; each kind bounded to a few items so a report stays seconds.

- behavior / violence: the missed positive events (tail / violent predicted negative), most confident miss
  first, as strips of frames read from the item's video with the suite's reader (datamodules/video.py);
- segmentation: the lowest-F1 test images, image | true mask | predicted mask. The predictions file holds
  per-image F1 but no masks, so the run's model (its exported ONNX bundle when there is one, else the best
  checkpoint) runs again on those few images through the segmentation predictor: a report needs no mask
  dump of every test image, and the pictures match what ``predict.py`` gives a user;
- lego: the most confused part pairs, a misread image beside an image of the class it was taken for;
- relevance: the events the alert got most wrong (pixel IoU when the predictions carry it, else the
  event score's distance from the truth), as strips of their frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from suite.report.classification import labelled
from suite.report.figures import Section, figure_md, save
from suite.report.run import RunFacts, numeric

log = logging.getLogger(__name__)

MAX_ITEMS = 6  # worst items drawn per run
MAX_EVENTS = 4  # video events drawn per run (each a strip of frames)
FRAMES_PER_STRIP = 6
MAX_PAIRS = 3  # confused class pairs drawn


def _positive_class(run: RunFacts, frame: pd.DataFrame) -> str | None:
    """The class a miss is counted on: the run's tail/positive class, else the second score column's class."""
    for key in ("tail_class", "positive_class", "positive"):
        value = run.label_map.get(key)
        if isinstance(value, str):
            return value
    names = [c[len("score_"):] for c in frame.columns if c.startswith("score_")]
    return names[1] if len(names) == 2 else None


def _strip_figure(rows: list[tuple[np.ndarray, str]], title: str) -> plt.Figure:
    """One row per event: its frames side by side, the row's text on the left."""
    cols = max(len(frames) for frames, _ in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.5 * cols + 1.2, 1.45 * len(rows) + 0.4), squeeze=False)
    for r, (frames, text) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(frames):
                ax.imshow(frames[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(text, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _event_frames(path: Path, start_s: float | None, end_s: float | None) -> np.ndarray:
    from datamodules.video import event_frame_range, probe_video, read_frames, uniform_indices

    info = probe_video(path)
    if start_s is not None and end_s is not None:
        first, last = event_frame_range(info, start_s, end_s)
    else:
        first, last = 0, max(info.num_frames - 1, 0)
    span = max(last - first + 1, 1)
    indices = [first + i for i in uniform_indices(span, min(FRAMES_PER_STRIP, span))]
    width = 160
    size = (width, max(2, int(round(width * info.height / max(info.width, 1))) // 2 * 2))
    return read_frames(path, indices, size=size)


# -- behavior ------------------------------------------------------------------------------------------
def _behavior_events(run: RunFacts) -> pd.DataFrame:
    """The events of the manifests the run read (event_id -> video path, start_s, end_s)."""
    from datamodules.splits import add_event_ids

    tables = []
    for source in dict.fromkeys(run.sources):
        path = Path(source)
        if path.suffix.lower() != ".csv" or not path.is_file():
            continue
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if not {"video_path", "video_id", "start_s", "end_s"} <= set(table.columns):
            continue
        table = add_event_ids(table)
        video_root = (run.config.get("data") or {}).get("video_root")
        base = Path(video_root) if video_root else path.parent
        table["resolved"] = [str(p if Path(p).is_absolute() else base / p) for p in table["video_path"]]
        tables.append(table[["event_id", "resolved", "start_s", "end_s"]])
    return pd.concat(tables).drop_duplicates("event_id") if tables else pd.DataFrame()


def _errors(run: RunFacts) -> tuple[pd.DataFrame, str | None]:
    """The wrong test items of a binary head, worst first: missed positives (lowest positive score first),
    then false alarms (highest positive score first); column ``_kind`` says which."""
    frame = labelled(run.predictions)
    positive = _positive_class(run, frame) if not frame.empty else None
    if positive is None:
        return pd.DataFrame(), None
    score = f"score_{positive}"
    frame = frame.assign(_score=numeric(frame, score) if score in frame.columns else np.nan)
    missed = frame[(frame["label"] == positive) & (frame["pred"] != positive)].sort_values("_score")
    false = frame[(frame["label"] != positive) & (frame["pred"] == positive)].sort_values("_score", ascending=False)
    return pd.concat([missed.assign(_kind="missed"), false.assign(_kind="false alarm")]), positive


def _video_errors(run: RunFacts, folder: Path, locate: Callable[[pd.Series], tuple[Path, float | None,
                  float | None] | None], what: str) -> Section:
    """Strips of the worst wrong events/videos (misses first) of a binary video head."""
    errors, positive = _errors(run)
    if errors.empty:
        return Section("Worst items", f"No wrong {what} on the test split: nothing to show.")
    rows, kinds = [], []
    for _, item in errors.iterrows():
        if len(rows) >= MAX_EVENTS:
            break
        where = locate(item)
        if where is None:
            continue
        path, start, end = where
        span = f"\n{start:.1f}-{end:.1f} s" if start is not None and end is not None else ""
        rows.append((_event_frames(path, start, end),
                     f"{item['_kind']}\n{Path(item['item_id']).name}{span}\np({positive})={item['_score']:.2f}"))
        kinds.append(item["_kind"])
    missed, false = int((errors["_kind"] == "missed").sum()), int((errors["_kind"] == "false alarm").sum())
    if not rows:
        root = run.data_root or "(not recorded)"
        return Section("Worst items", f"{missed} missed and {false} false-alarm {what}, none found on disk (the data "
                                      f"root {root} or the manifests of manifests_used.txt).")
    fig = _strip_figure(rows, f"wrong {what}: missed '{positive}' first, then false alarms")
    link = save(fig, folder, "worst_events")
    caption = (f"{len(rows)} wrong test {what} ({kinds.count('missed')} missed '{positive}', "
               f"{kinds.count('false alarm')} false alarm(s); of {missed} missed and {false} false alarms in all): "
               f"{FRAMES_PER_STRIP} frames spread over each, with p({positive}). Misses are drawn first, the lowest "
               f"p({positive}) first; then false alarms, the highest first.")
    return Section("Worst items", figure_md(link, caption))


def behavior_worst(run: RunFacts, folder: Path) -> Section:
    events = _behavior_events(run)
    lookup = events.set_index("event_id") if not events.empty else None

    def locate(item: pd.Series) -> tuple[Path, float, float] | None:
        if lookup is None or item["item_id"] not in lookup.index:
            return None
        event = lookup.loc[item["item_id"]]
        path = Path(event["resolved"])
        return (path, float(event["start_s"]), float(event["end_s"])) if path.is_file() else None

    return _video_errors(run, folder, locate, "events")


# -- violence --------------------------------------------------------------------------------------------
def violence_worst(run: RunFacts, folder: Path) -> Section:
    def locate(item: pd.Series) -> tuple[Path, None, None] | None:
        path = run.resolve_item(item["item_id"])
        return (path, None, None) if path is not None else None

    return _video_errors(run, folder, locate, "videos")


# -- segmentation ------------------------------------------------------------------------------------------
def _mask_of(image: Path) -> Path | None:
    masks = image.parent.parent / "masks"
    found = sorted(masks.glob(f"{image.stem}.*")) if masks.is_dir() else []
    return found[0] if found else None


def segmentation_worst(run: RunFacts, folder: Path) -> Section:
    from datamodules.images import read_image, read_mask
    from datamodules.segmentation import binarize
    from deploy.backends import OnnxBackend, TorchBackend, is_bundle
    from deploy.predictors import predictor_for

    frame = run.predictions
    if frame is None or "f1" not in frame.columns or run.data_root is None:
        return Section("Worst items", "No per-image F1 in predictions_agg.csv or no data root: nothing to show.")
    frame = frame.assign(_f1=numeric(frame, "f1"), _iou=numeric(frame, "iou")).sort_values(["_f1", "_iou"])
    worst = frame.head(MAX_ITEMS)
    export = run.path / "export"
    # threads=None: the checkpoint path must not change the torch thread count of a training process it ends
    backend = OnnxBackend(export, threads=1) if is_bundle(export) else TorchBackend(run.path, "best", threads=None)
    predictor = predictor_for(backend)
    foreground = run.label_map.get("foreground_value")
    rows = []
    for _, item in worst.iterrows():
        image_path = run.resolve_item(item["item_id"])
        mask_path = _mask_of(image_path) if image_path is not None else None
        if image_path is None or mask_path is None:
            continue
        rgb = read_image(image_path)
        truth = binarize(read_mask(mask_path), foreground)
        pred = predictor.segment(rgb)["mask"] > 0
        rows.append((rgb, truth, pred, item))
    if not rows:
        return Section("Worst items", f"The worst test images were not found under the data root {run.data_root}.")
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.3, 2.1 * len(rows) + 0.3), squeeze=False)
    for r, (rgb, truth, pred, item) in enumerate(rows):
        for c, (picture, title) in enumerate(((rgb, "image"), (truth, "true mask"), (pred, "predicted mask"))):
            ax = axes[r, c]
            ax.imshow(picture, cmap="gray" if c else None, vmin=0, vmax=1) if c else ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(f"{Path(item['item_id']).name}\nF1 {item['_f1']:.2f} IoU {item['_iou']:.2f}",
                              fontsize=7)
    fig.tight_layout()
    link = save(fig, folder, "worst_masks")
    scores = ", ".join(f"{Path(i['item_id']).name} F1 {i['_f1']:.2f}" for *_, i in rows)
    caption = (f"The {len(rows)} test image(s) with the lowest F1 of {len(frame)} ({scores}): the image, its true mask "
               f"and the mask the run's model predicts now ({backend.name} backend, threshold {predictor.threshold}).")
    return Section("Worst items", figure_md(link, caption))


# -- lego ---------------------------------------------------------------------------------------------------
def lego_worst(run: RunFacts, folder: Path) -> Section:
    from datamodules.images import read_image

    frame = labelled(run.predictions)
    root = run.data_root
    if frame.empty or root is None:
        return Section("Worst items", "No labelled test predictions or no data root: nothing to show.")
    wrong = frame[frame["label"] != frame["pred"]]
    if wrong.empty:
        return Section("Worst items", "No confused pair: every labelled test item was read right.")
    pairs = wrong.groupby(["label", "pred"]).size().sort_values(ascending=False).head(MAX_PAIRS)
    rows = []
    for (true, pred), count in pairs.items():
        misread = wrong[(wrong["label"] == true) & (wrong["pred"] == pred)].iloc[0]
        example = frame[frame["label"] == pred]
        sample = example[example["pred"] == pred]
        sample = sample if not sample.empty else example
        name = Path(misread["item_id"]).name
        pictures = [(run.resolve_item(misread["item_id"]), f"true {true}, read {pred}\n{name}")]
        if not sample.empty:
            pictures.append((run.resolve_item(sample.iloc[0]["item_id"]),
                             f"a {pred}\n{Path(sample.iloc[0]['item_id']).name}"))
        rows.append((pictures, int(count), true, pred))
    fig, axes = plt.subplots(len(rows), 2, figsize=(4.4, 2.3 * len(rows) + 0.2), squeeze=False)
    for r, (pictures, count, true, pred) in enumerate(rows):
        for c in range(2):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(pictures) or pictures[c][0] is None:
                ax.axis("off")
                continue
            ax.imshow(read_image(pictures[c][0]))
            ax.set_title(pictures[c][1], fontsize=7)
        axes[r, 0].set_ylabel(f"{true} → {pred}\n×{count}", fontsize=8)
    fig.tight_layout()
    link = save(fig, folder, "confused_pairs")
    listing = ", ".join(f"{t} read as {p} ×{n}" for (t, p), n in pairs.items())
    caption = (f"The {len(rows)} most confused part pair(s) of the test split ({listing}; {len(wrong)} of {len(frame)} "
               "items wrong): left a misread image, right an image of the class it was taken for.")
    return Section("Worst items", figure_md(link, caption))


# -- relevance -----------------------------------------------------------------------------------------------
def _event_folder_frames(folder: Path) -> np.ndarray | None:
    """Frames spread over one motion event's folder of images (name order, as the data module reads them)."""
    from datamodules.images import list_images, read_image
    from datamodules.video import uniform_indices

    files = list_images(folder) if folder.is_dir() else []
    if not files:
        return None
    frames = [read_image(files[i]) for i in uniform_indices(len(files), min(FRAMES_PER_STRIP, len(files)))]
    height, width = frames[0].shape[:2]
    return np.stack([f if f.shape[:2] == (height, width) else np.zeros_like(frames[0]) for f in frames])


def relevance_worst(run: RunFacts, folder: Path) -> Section:
    """Segmentation mode: the events whose alert is wrong, furthest from the truth first (the predictions hold
    the event score, not a per-event pixel IoU). Contrastive mode: the wrong triplets, the anchor closest to the
    negative first."""
    frame, root = run.predictions, run.data_root
    if frame is None or frame.empty or root is None:
        return Section("Worst items", "No test predictions or no data root: nothing to show.")
    if "triplet_right" in frame.columns:
        gap = numeric(frame, "d_positive") - numeric(frame, "d_negative")
        wrong = frame.assign(_gap=gap)[numeric(frame, "triplet_right") == 0].sort_values("_gap", ascending=False)
        texts = [f"{i['item_id']}\nd+ {float(i['d_positive']):.2f} d- {float(i['d_negative']):.2f}"
                 for _, i in wrong.iterrows()]
        what, order = "wrong triplets (the positive further than the negative)", "the largest d+ - d- first"
    else:
        known = labelled(frame)
        score = (numeric(known, "score_relevant") if "score_relevant" in known.columns
                 else pd.Series(np.nan, known.index))
        truth = (known["label"] == "relevant").astype(float)
        wrong = known.assign(_off=(score - truth).abs())[known["label"] != known["pred"]].sort_values(
            "_off", ascending=False)
        texts = [f"{i['item_id']}\ntrue {i['label']}, alert {i['pred']}\nscore {i['_off']:.2f} off"
                 for _, i in wrong.iterrows()]
        what, order = "events with a wrong alert", "the event score furthest from the truth first"
    if wrong.empty:
        return Section("Worst items", f"No {what.split(' (')[0]} on the test split: nothing to show.")
    rows = []
    for (_, item), text in zip(wrong.iterrows(), texts, strict=True):
        if len(rows) >= MAX_EVENTS:
            break
        frames = _event_folder_frames(root / item["item_id"])
        if frames is not None:
            rows.append((frames, text))
    if not rows:
        return Section("Worst items", f"{len(wrong)} {what}, none found under the data root {root}.")
    fig = _strip_figure(rows, what)
    link = save(fig, folder, "worst_events")
    caption = (f"{len(rows)} of the {len(wrong)} {what} on the test split, {order}: {FRAMES_PER_STRIP} frames spread "
               "over each event's folder.")
    return Section("Worst items", figure_md(link, caption))


WORST: dict[str, Callable[[RunFacts, Path], Section]] = {
    "behavior": behavior_worst,
    "violence": violence_worst,
    "segmentation": segmentation_worst,
    "lego": lego_worst,
    "relevance": relevance_worst,
}


def worst_section(run: RunFacts, folder: Path) -> Section | None:
    make = WORST.get(run.task)
    return make(run, folder) if make is not None else None
