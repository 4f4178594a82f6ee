"""Behavior predict on one long video: the real clips of ../shared/data/grouped_video end to end, 1x and 10x.

    python bench/bench_behavior_predict.py <run dir | bundle> [--manifest test.csv] [--repeat 10] [--threads 1]
                                           [--work DIR] [key=value ...]

The clips (those of ``--manifest``, e.g. the held-out test manifest ``tools.make_splits`` wrote for the
run, else every clip of labels.csv) are brought to one size and frame rate with ffmpeg and concatenated
into one long video, in the order of the list; a second video repeats it ``--repeat`` times (stream
copy). ``predict.py`` runs on each in its own process. Printed: the events found against the clips'
labels (per clip, and the share of fight time covered), and wall time and peak RSS of both runs: the
sliding window decodes each video once and holds only a few windows' frames, so the peak should stay
the same at 10x the length. ``key=value`` items go to the predictor (stride_s, threshold, min_gap_s ...).

Skips (exit 0) when ../shared/data/grouped_video is absent; without an ffmpeg binary the clips are
re-encoded and repeated with PyAV (the same libav) instead. Timings on a shared machine drift;
compare the two runs of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datamodules.video import probe_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GROUPED = ROOT.parent / "shared" / "data" / "grouped_video"
SIZE, FPS = (640, 360), 25


def clips_of(manifest: Path | None) -> pd.DataFrame:
    """path (absolute), label, group of the clips to concatenate, grouped by source video."""
    if manifest is not None:
        df = pd.read_csv(manifest)
        out = pd.DataFrame({"path": df["video_path"], "label": df["label"].astype(str), "group": df["video_id"]})
    else:
        df = pd.read_csv(GROUPED / "labels.csv")
        out = pd.DataFrame({"path": [str(GROUPED / p) for p in df["path"]], "label": df["label"],
                            "group": df["source_group"]})
    return out.sort_values(["group", "path"]).reset_index(drop=True)


def normalise(src: str, dst: Path) -> None:
    """One size (letterboxed), frame rate and codec, so that the concat demuxer can copy the streams."""
    w, h = SIZE
    vf = f"scale={w}:{h}:force_original_aspect_ratio=decrease,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={FPS},format=yuv420p"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-an", "-vf", vf, "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "23", "-g", str(2 * FPS), str(dst)], check=True)


def letterbox(frame, size: tuple[int, int]) -> np.ndarray:  # noqa: ANN001 - an av.VideoFrame
    """RGB at ``size`` with the aspect ratio kept (black bars), as ffmpeg's scale+pad filters above."""
    w, h = size
    scale = min(w / frame.width, h / frame.height)
    sw, sh = max(2, int(frame.width * scale) // 2 * 2), max(2, int(frame.height * scale) // 2 * 2)
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - sh) // 2, (w - sw) // 2
    out[y:y + sh, x:x + sw] = frame.reformat(width=sw, height=sh, format="rgb24").to_ndarray()
    return out


def concat_pyav(sources: list[str], dst: Path) -> list[float]:
    """Without ffmpeg: the clips re-encoded into one video at SIZE and FPS with PyAV (frames resampled to FPS by
    the nearest earlier frame); returns each clip's duration in the output."""
    import av

    durations = []
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "g": str(2 * FPS)}
        for src in sources:
            with av.open(src) as container:
                video = container.streams.video[0]
                frames = [(float(f.time or 0.0), letterbox(f, SIZE)) for f in container.decode(video)]
            start = frames[0][0]
            span = frames[-1][0] - start + 1.0 / float(video.average_rate or FPS)
            count = max(1, int(round(span * FPS)))
            j = 0
            for k in range(count):
                while j + 1 < len(frames) and frames[j + 1][0] - start <= k / FPS + 1e-6:
                    j += 1
                for packet in stream.encode(av.VideoFrame.from_ndarray(frames[j][1], format="rgb24")):
                    out.mux(packet)
            durations.append(count / FPS)
        for packet in stream.encode():
            out.mux(packet)
    return durations


def repeat_pyav(src: Path, dst: Path, times: int) -> None:
    """``src`` played ``times`` times, by copying its packets with shifted timestamps (no re-encoding)."""
    import av

    with av.open(str(src)) as first:
        duration = first.streams.video[0].duration  # in stream time base
    with av.open(str(dst), mode="w") as out:
        for i in range(times):
            with av.open(str(src)) as container:
                video = container.streams.video[0]
                if i == 0:
                    stream = out.add_stream_from_template(video)
                for packet in container.demux(video):
                    if packet.dts is None:
                        continue
                    packet.pts += i * duration
                    packet.dts += i * duration
                    packet.stream = stream
                    out.mux(packet)


def concat(parts: list[Path], dst: Path, repeat: int = 1) -> None:
    listing = dst.with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for _ in range(repeat) for p in parts))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    str(dst)], check=True)


def run_predict(source: str, video: Path, out: Path, threads: int, options: list[str]) -> tuple[float, float, dict]:
    """(wall s, peak RSS MiB, summary) of ``predict.py`` in its own process (wait4 gives that child's peak)."""
    cmd = [sys.executable, str(ROOT / "predict.py"), source, str(video), "--out", str(out), "--threads",
           str(threads), "--no-progress", *options]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict.py failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024, json.loads((out / "summary.json").read_text())


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def compare(clips: pd.DataFrame, events: list[dict], tail: str) -> None:
    print(f"\n{'clip':<28} {'label':<8} {'start_s':>8} {'end_s':>8} {'in event':>9}")
    for row in clips.itertuples():
        covered = sum(overlap(row.start_s, row.end_s, e["start_s"], e["end_s"]) for e in events)
        share = covered / (row.end_s - row.start_s)
        print(f"{Path(row.path).name:<28} {row.label:<8} {row.start_s:>8.2f} {row.end_s:>8.2f} {share:>8.0%}")
    is_tail = clips["label"] == tail
    tail_time = float((clips["end_s"] - clips["start_s"])[is_tail].sum())
    event_time = sum(e["end_s"] - e["start_s"] for e in events)
    hit = sum(overlap(r.start_s, r.end_s, e["start_s"], e["end_s"]) for r in clips[is_tail].itertuples()
              for e in events)
    hit_clips = sum(any(overlap(r.start_s, r.end_s, e["start_s"], e["end_s"]) > 0.5 * (r.end_s - r.start_s)
                        for e in events) for r in clips.itertuples() if r.label == tail)
    false_clips = sum(any(overlap(r.start_s, r.end_s, e["start_s"], e["end_s"]) > 0.5 * (r.end_s - r.start_s)
                          for e in events) for r in clips.itertuples() if r.label != tail)
    print(f"\nevents found: {len(events)}, {event_time:.1f} s; '{tail}' time {tail_time:.1f} s of "
          f"{float(clips['end_s'].iloc[-1]):.1f} s")
    print(f"'{tail}' time inside events (recall by time): {hit / max(tail_time, 1e-9):.1%}; event time on "
          f"'{tail}' clips (precision by time): {hit / max(event_time, 1e-9):.1%}")
    print(f"'{tail}' clips mostly inside an event: {hit_clips}/{int(is_tail.sum())}; other clips mostly inside an "
          f"event: {false_clips}/{int((~is_tail).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a behavior run dir or an exported bundle")
    parser.add_argument("options", nargs="*", help="predictor key=value options")
    parser.add_argument("--manifest", type=Path, default=None, help="clips to use (video_path,video_id,label CSV)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tail", default="fight", help="the label of the clips the events should cover")
    parser.add_argument("--work", type=Path, default=None, help="keep the videos and outputs here")
    args = parser.parse_args()
    if not GROUPED.is_dir() and args.manifest is None:
        print(f"skipped: {GROUPED} not found (the real grouped clips are not on this machine)")
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_behavior_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    clips = clips_of(args.manifest)
    long1, long10 = work / "long_1x.mp4", work / f"long_{args.repeat}x.mp4"
    if shutil.which("ffmpeg") is not None:
        parts, durations = [], []
        for i, row in enumerate(clips.itertuples()):
            part = work / "parts" / f"{i:03d}.mp4"
            part.parent.mkdir(exist_ok=True)
            if not part.is_file():
                normalise(row.path, part)
            parts.append(part)
            durations.append(probe_video(part).duration_s)
        concat(parts, long1)
        concat(parts, long10, args.repeat)
    else:  # the same videos through PyAV's own libav
        print("ffmpeg not found: concatenating with PyAV")
        durations = concat_pyav(list(clips["path"]), long1)
        repeat_pyav(long1, long10, args.repeat)
    ends = np.cumsum(durations)
    clips = clips.assign(start_s=ends - np.asarray(durations), end_s=ends)
    figures = {}
    for name, video in (("1x", long1), (f"{args.repeat}x", long10)):
        out = work / f"predict_{name}_{time.strftime('%H%M%S')}"
        info = probe_video(video)
        wall, rss, summary = run_predict(args.source, video, out, args.threads, args.options)
        figures[name] = (info.duration_s, wall, rss, summary, out)
        print(f"{name}: {video.name} {info.duration_s:.1f} s ({info.num_frames} frames {info.width}x{info.height}) "
              f"-> {summary['events']} events in {wall:.1f} s wall, peak RSS {rss:.0f} MiB; outputs {out}")
    duration, _, _, summary, out = figures["1x"]
    print(f"\nclips: {len(clips)} ({', '.join(f'{k} {v}' for k, v in clips['label'].value_counts().items())}); "
          f"options {summary['options']}; timeline {next((out / 'pictures').glob('*.png'), None)}")
    compare(clips, summary["event_list"], args.tail)
    (_, _, rss1, _, _), (_, _, rss10, _, _) = figures["1x"], figures[f"{args.repeat}x"]
    print(f"\npeak RSS 1x {rss1:.0f} MiB, {args.repeat}x {rss10:.0f} MiB (ratio {rss10 / rss1:.2f})")


if __name__ == "__main__":
    main()
