"""Build the behavior task's three splits from one events table (or a folder of one-event clips).

    python -m tools.make_splits --events events.csv --out-dir manifests/
    python -m tools.make_splits --clips-dir clips/ --labels clips/labels.csv --path-column path \\
        --video-id-column source_group --label-column label --tail-label fight --out-dir manifests/

First whole videos are held out as the test set (``--test-fraction`` of the events; or ``--test-by
<column>``, e.g. camera, to hold out whole cameras). From the rest it writes, with a timestamp in
every name like the training plan's files:

    train_old_<ts>.csv / val_old_<ts>.csv                 video-disjoint ("old") split
    train_intravideo_<ts>.csv / val_intravideo_<ts>.csv   events of one video on both sides
    train_boosted_<ts>.csv / val_boosted_<ts>.csv         intra-video, tail oversampled to --boost-share
    test_<ts>.csv

and prints, per split: events, tail %, videos in both train and val, videos with tail events on
both sides. Video paths are written absolute. The same --seed gives the same rows.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from suite.config_check import ranged_arg
from suite.errors import DataError, UserError, run_guarded
from suite.outputs import make_output_dir, output_dir_arg


def load_events(path: Path) -> pd.DataFrame:
    from datamodules.splits import REQUIRED_COLUMNS

    if not path.is_file():
        raise DataError(f"events CSV not found: {path}")
    df = pd.read_csv(path, dtype={"video_id": str, "label": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"events CSV {path} lacks column(s) {missing}; it has {list(df.columns)}")
    df["video_path"] = [str(p if Path(p).is_absolute() else (path.parent / p).resolve()) for p in df["video_path"]]
    return df


def load_clip_folder(
    clips_dir: Path, labels: Path, path_column: str, video_id_column: str, label_column: str
) -> pd.DataFrame:
    """One event per clip: the whole clip (0 s to its probed duration), its group column as the video id."""
    from tqdm import tqdm

    from datamodules.video import probe_video

    if not labels.is_file():
        raise DataError(f"labels CSV not found: {labels}")
    df = pd.read_csv(labels, dtype=str)
    for column, flag in ((path_column, "--path-column"), (video_id_column, "--video-id-column"),
                         (label_column, "--label-column")):
        if column not in df.columns:
            raise DataError(f"labels CSV {labels} has no column '{column}' ({flag}); it has {list(df.columns)}")
    rows = []
    for i, row in enumerate(tqdm(df.itertuples(index=False), total=len(df), desc="probing clips")):
        rel = getattr(row, path_column)
        path = (clips_dir / rel).resolve()
        try:
            info = probe_video(path)
        except DataError as err:
            raise DataError(f"{labels}, line {i + 2}: {err}") from None
        rows.append({"video_path": str(path), "video_id": str(getattr(row, video_id_column)), "start_s": 0.0,
                     "end_s": round(info.duration_s, 3), "label": str(getattr(row, label_column)),
                     "event_id": Path(rel).stem})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.make_splits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", type=Path, help="events CSV: video_path,video_id,start_s,end_s,label")
    src.add_argument("--clips-dir", type=Path, help="folder of one-event clips (needs --labels)")
    parser.add_argument("--labels", type=Path, help="labels CSV of the clip folder")
    parser.add_argument("--path-column", default="path", help="clip path column of --labels (relative to the folder)")
    parser.add_argument("--video-id-column", default="video_id", help="column giving each clip's source video")
    parser.add_argument("--label-column", default="label", help="label column of --labels")
    parser.add_argument("--tail-label", default="tail", help="label value of the tail (positive) class")
    parser.add_argument("--out-dir", type=output_dir_arg, required=True)
    parser.add_argument("--val-fraction", type=ranged_arg("data.val_fraction"), default=0.2,
                        help="share of the remaining events for validation, in (0, 1)")
    parser.add_argument("--test-fraction", type=ranged_arg("data.test_fraction"), default=0.2,
                        help="share of events held out as test, in (0, 1)")
    parser.add_argument("--test-by", default="video_id", help="column whose groups are held out whole as test")
    parser.add_argument("--boost-share", type=ranged_arg("data.boost_share"), default=0.3,
                        help="tail share after oversampling, in (0, 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timestamp", default=None, help="name suffix (default: now, YYYYmmdd_HHMMSS)")
    args = parser.parse_args(argv)

    from datamodules.splits import add_event_ids, build_all_splits, hold_out_videos, summarize

    try:
        if args.events is not None:
            events = load_events(args.events)
        else:
            if args.labels is None:
                raise UserError("--clips-dir needs --labels <labels CSV>")
            events = load_clip_folder(args.clips_dir, args.labels, args.path_column, args.video_id_column,
                                      args.label_column)
        if not (events["label"].astype(str) == args.tail_label).any():
            raise DataError(f"no event has the tail label '{args.tail_label}' (labels: "
                            f"{sorted(events['label'].astype(str).unique())}); set --tail-label")
        if args.test_by not in events.columns:
            raise DataError(f"--test-by column '{args.test_by}' is not in the events ({list(events.columns)})")
        events = add_event_ids(events)
        pool, test = hold_out_videos(events, args.test_fraction, args.tail_label, args.seed, args.test_by)
        splits = build_all_splits(pool, args.val_fraction, args.tail_label, args.seed, args.boost_share)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from suite.io import atomic_write_csv

    stamp = args.timestamp or datetime.now().strftime("%Y%m%d_%H%M%S")
    out = make_output_dir(args.out_dir, "--out-dir")

    def write(df: pd.DataFrame, name: str) -> Path:
        path = out / f"{name}_{stamp}.csv"
        atomic_write_csv(path, df.to_dict(orient="records"))
        return path

    test_path = write(test, "test")
    tail_pct = 100.0 * float((test["label"].astype(str) == args.tail_label).mean())
    print(f"test: {len(test)} events, {tail_pct:.1f}% tail, {test['video_id'].nunique()} videos "
          f"held out by {args.test_by} -> {test_path}")
    for name, (train, val) in splits.items():
        paths = write(train, f"train_{name}"), write(val, f"val_{name}")
        for line in summarize(name, train, val, args.tail_label).lines():
            print(line)
        print(f"[{name}] -> {paths[0]}  {paths[1]}")
    labels = sorted(events["label"].astype(str).unique())
    others = [x for x in labels if x != args.tail_label]
    print("train with: python train.py experiment=<baseline_old_split|intravideo|intravideo_boosted> "
          f"data.train_manifest=... data.val_manifest=... data.test_manifest={test_path} "
          f"'data.class_names=[{','.join(others + [args.tail_label])}]' data.tail_class={args.tail_label}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback
