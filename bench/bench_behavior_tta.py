"""Frames decoded and wall time per event: 5-clip TTA from one decode vs each clip decoded on its own.

    python bench/bench_behavior_tta.py [--events 40] [--repeats 3] [--clips 5] [--frames 8]

Datasets: the synthetic behavior videos (events cut from 16 s videos, the training plan's case)
and, when present, ../shared/data/grouped_video (one event per clip, real H.264 up to 1280x720).
Also times OpenCV (seek per clip with CAP_PROP_POS_FRAMES) on the same clips, the alternative decoder.
Prints medians; figures drift 10-30 % on a shared machine, compare the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import pandas as pd  # noqa: E402

from datamodules.video import (  # noqa: E402
    DecodeStats,
    clip_indices,
    event_frame_range,
    probe_video,
    read_clips,
    read_frames,
    stride_for_fps,
    tta_positions,
)

GROUPED = Path(__file__).resolve().parents[2] / "shared" / "data" / "grouped_video"


def opencv_clip(path: Path, indices: list[int], size: tuple[int, int]) -> int:
    """One clip with OpenCV: seek to the first index, read sequentially; returns frames read."""
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, indices[0])
    wanted, pos, n = set(indices), indices[0], 0
    while pos <= indices[-1]:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        if pos in wanted:
            cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)
        pos += 1
    cap.release()
    return n


def events_of(rows: list[tuple[Path, float, float]], clips: int, frames: int, target_fps: float | None):
    out = []
    for path, start_s, end_s in rows:
        info = probe_video(path)
        start, end = event_frame_range(info, start_s, end_s)
        stride = stride_for_fps(info.fps, target_fps)
        out.append((path, [clip_indices(start, end, frames, stride, p) for p in tta_positions(clips)]))
    return out


def bench(name: str, events, repeats: int, size: tuple[int, int]) -> None:
    results = {}
    for mode in ("union", "separate", "opencv"):
        times, decoded = [], []
        for _ in range(repeats):
            stats = DecodeStats()
            t0 = time.perf_counter()
            n_cv = 0
            for path, clips in events:
                if mode == "union":
                    read_clips(path, clips, size=size, stats=stats)
                elif mode == "separate":
                    for clip in clips:
                        read_frames(path, clip, size=size, stats=stats)
                else:
                    n_cv += sum(opencv_clip(path, clip, size) for clip in clips)
            times.append((time.perf_counter() - t0) / len(events) * 1000)
            decoded.append((stats.frames_decoded if mode != "opencv" else n_cv) / len(events))
        results[mode] = (statistics.median(times), statistics.median(decoded))
    u, s, c = results["union"], results["separate"], results["opencv"]
    print(f"{name}: {len(events)} events, {len(events[0][1])} clips x {len(events[0][1][0])} frames")
    print(f"  PyAV one decode per event : {u[0]:7.1f} ms/event, {u[1]:6.1f} frames decoded/event")
    print(f"  PyAV each clip on its own : {s[0]:7.1f} ms/event, {s[1]:6.1f} frames decoded/event")
    print(f"  OpenCV each clip (seek)   : {c[0]:7.1f} ms/event, {c[1]:6.1f} frames read/event (after its seek)")
    print(f"  ratio one/each: frames {u[1] / s[1]:.2f}, time {u[0] / s[0]:.2f}; PyAV-union vs OpenCV time "
          f"{u[0] / c[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    from datamodules.synthetic.behavior import GENERATOR

    with tempfile.TemporaryDirectory() as tmp:
        root = GENERATOR.ensure(Path(tmp) / "behavior", 0, cameras=4, test_cameras=1, videos_per_camera=2,
                                events_per_video=8, size=96, fps=15)
        df = pd.read_csv(root / "events.csv").head(args.events)
        rows = [(root / p, s, e) for p, s, e in zip(df.video_path, df.start_s, df.end_s, strict=True)]
        bench("synthetic (events inside 16 s, 15 fps, 96x96 videos)", events_of(rows, args.clips, args.frames, None),
              args.repeats, (64, 64))
    if GROUPED.is_dir():
        labels = pd.read_csv(GROUPED / "labels.csv").head(args.events)
        rows = [(GROUPED / p, 0.0, float(d)) for p, d in zip(labels.path, labels.duration_s, strict=True)]
        bench("grouped_video (one event per clip, stride for 8 fps)", events_of(rows, args.clips, args.frames, 8.0),
              args.repeats, (64, 64))
    else:
        print(f"grouped_video not found at {GROUPED}: skipped")


if __name__ == "__main__":
    main()
