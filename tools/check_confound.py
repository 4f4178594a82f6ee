"""Video-confounding diagnostic of the behavior task (the training plan's check_video_confound).

    python -m tools.check_confound --train train.csv --val val.csv --predictions <run>/predictions_agg.csv

Reports:
  * probability clustering: distinct scores (rounded to --decimals) shared by 3+ events;
  * per-video score spread: std of the tail probability inside each video, and the share of the
    score variance explained by the video alone (eta squared; near 1 = the model scores videos,
    not behaviour);
  * train/val video overlap, and the spread of all scores (a flat model is flagged too);
and ends with a one-line verdict. ``--json`` also writes the report to a file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from suite.outputs import output_file_arg


def confound_report(
    train: pd.DataFrame, val: pd.DataFrame, predictions: pd.DataFrame, decimals: int = 3, min_count: int = 3,
    eta_limit: float = 0.8, cluster_limit: int = 3, flat_limit: float = 0.02,
) -> dict[str, Any]:
    from lightning_modules.calibration import probability_clusters

    probs = predictions["prob_tail"].astype(float)
    rounded = probs.round(decimals)
    counts = rounded.value_counts()
    clusters = probability_clusters(probs.tolist(), decimals=decimals, min_count=min_count)
    grouped = predictions.assign(prob_tail=probs).groupby(predictions["video_id"].astype(str))["prob_tail"]
    per_video = grouped.agg(["count", "mean", "std"]).fillna(0.0)
    total_var = float(probs.var(ddof=0)) if len(probs) > 1 else 0.0
    between = float(((per_video["mean"] - probs.mean()) ** 2 * per_video["count"]).sum() / max(len(probs), 1))
    eta2 = between / total_var if total_var > 0 else 1.0
    tv, vv = set(train["video_id"].astype(str)), set(val["video_id"].astype(str))
    report: dict[str, Any] = {
        "events": len(predictions),
        "prob_clusters": clusters,
        "largest_clusters": {f"{k:.{decimals}f}": int(v) for k, v in counts[counts >= min_count].head(10).items()},
        "distinct_scores": int(rounded.nunique()),
        "videos": len(per_video),
        "score_std": float(probs.std(ddof=0)) if len(probs) > 1 else 0.0,
        "mean_within_video_std": float(per_video["std"].mean()),
        "video_explained_variance": eta2,
        "train_val_videos_overlapping": len(tv & vv),
        "train_val_videos_total": len(tv | vv),
        "per_video": {v: {"events": int(r["count"]), "mean_prob": float(r["mean"]), "std_prob": float(r["std"])}
                      for v, r in per_video.iterrows()},
    }
    problems = []
    if clusters >= cluster_limit:
        problems.append(f"{clusters} score values shared by {min_count}+ events")
    if eta2 >= eta_limit and len(per_video) > 1:
        problems.append(f"the video explains {eta2:.0%} of the score variance")
    if problems:
        report["verdict"] = "LIKELY VIDEO CONFOUNDING: " + "; ".join(problems)
    elif report["score_std"] < flat_limit:
        report["verdict"] = (f"NO SIGNAL: scores barely vary (std {report['score_std']:.4f}); the model does not "
                             "separate events, so confounding cannot be judged")
    else:
        report["verdict"] = (f"no sign of video confounding ({clusters} clustered values, video explains "
                             f"{eta2:.0%} of the score variance)")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.check_confound", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="train manifest CSV")
    parser.add_argument("--val", type=Path, required=True, help="val manifest CSV")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions_agg.csv of a run")
    parser.add_argument("--decimals", type=int, default=3, help="rounding before counting equal scores")
    parser.add_argument("--min-count", type=int, default=3, help="a value is a cluster when this many events share it")
    parser.add_argument("--json", type=output_file_arg, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    frames = {}
    for name, path, cols in (("train", args.train, ["video_id"]), ("val", args.val, ["video_id"]),
                             ("predictions", args.predictions, ["video_id", "prob_tail"])):
        if not path.is_file():
            print(f"error: {name} file not found: {path}", file=sys.stderr)
            return 2
        df = pd.read_csv(path, dtype={"video_id": str})
        missing = [c for c in cols if c not in df.columns]
        if missing:
            print(f"error: {path} lacks column(s) {missing}", file=sys.stderr)
            return 2
        frames[name] = df
    report = confound_report(frames["train"], frames["val"], frames["predictions"], args.decimals, args.min_count)
    print(f"events: {report['events']}, distinct scores: {report['distinct_scores']}")
    print(f"probability clustering: {report['prob_clusters']} values appearing {args.min_count}+ times "
          f"{report['largest_clusters']}")
    print(f"score std over all events: {report['score_std']:.4f}")
    print(f"per-video spread: mean within-video std {report['mean_within_video_std']:.4f}; "
          f"video explains {report['video_explained_variance']:.1%} of the score variance "
          f"({report['videos']} videos)")
    print(f"train/val overlap: {report['train_val_videos_overlapping']} of {report['train_val_videos_total']} videos "
          "in both")
    print(f"verdict: {report['verdict']}")
    if args.json is not None:
        from suite.io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    from suite.errors import run_guarded

    sys.exit(run_guarded(main))  # Ctrl-C: exit 130 without a traceback
