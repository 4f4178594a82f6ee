"""Video reading: probe, decode only the frames a clip needs, and the index arithmetic of clips.

Decoder choice: PyAV, by measurement (bench/bench_behavior_tta.py, 2-core CPU): the 5 TTA clips
of an event take 84 ms from one PyAV decode against 152 ms with OpenCV seeking per clip (synthetic
events inside 16 s videos), 137 ms against 308 ms on real 640x360-1280x720 clips; full decodes run
at the same speed (stack notes: ~1200 vs ~1270 fps). PyAV also gives frame timestamps, so a seek
lands on a known frame index instead of OpenCV's container-dependent CAP_PROP_POS_FRAMES, and it
resizes and converts to RGB in one swscale call.

All errors a user can cause (missing, empty, corrupt file, index past the end) are ``DataError``
naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from suite.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

# Decoder threads per opened file. FFmpeg's default (thread_count 0) starts a pool of one thread per core
# at every open: for the short reads of a clip (a seek and a few dozen frames) starting the pool costs more
# than it saves, and in DataLoader workers the pools of all workers oversubscribe the cores. The loader
# policy (datamodules/loader_options.py) sets this: 1 in each worker, the process's share without workers.
_DECODE_THREADS = 1


def set_decode_threads(threads: int) -> None:
    """Threads each decoder of this process uses (1 = no threading); frames decoded are the same for any count."""
    global _DECODE_THREADS
    _DECODE_THREADS = max(1, int(threads))


def decode_threads() -> int:
    return _DECODE_THREADS


def _set_threads(stream) -> None:  # noqa: ANN001
    if _DECODE_THREADS > 1:
        # frame + slice threads: FFmpeg picks what the codec supports; output is bit-identical either way
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = _DECODE_THREADS
    else:
        stream.codec_context.thread_count = 1


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    num_frames: int
    width: int
    height: int
    duration_s: float


@dataclass
class DecodeStats:
    """Counts what the decoder did, so benchmarks can report frames decoded per event."""

    files_opened: int = 0
    frames_decoded: int = 0
    seeks: int = 0
    per_file: dict[str, int] = field(default_factory=dict)

    def add(self, path: Path, frames: int) -> None:
        self.frames_decoded += frames
        self.per_file[str(path)] = self.per_file.get(str(path), 0) + frames


def list_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def _open(path: Path):  # noqa: ANN202 - av types are not worth importing at module level
    import av

    if not path.is_file():
        raise DataError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"video file is empty: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise DataError(f"cannot open video (corrupt or not a video): {path} ({err})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"file has no video stream: {path}")
    return container


def _count_packets(container, stream) -> int:  # noqa: ANN001
    """Frame count by demuxing (no decoding) for containers whose header has no count."""
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
    container.seek(0)
    return count


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video, from its header (demuxed if the header lacks a count)."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            try:
                num_frames = _count_packets(container, stream)
            except av.error.FFmpegError as err:
                raise DataError(f"cannot read video (corrupt): {path} ({err})") from None
        if num_frames <= 0 or fps <= 0 or width <= 0 or height <= 0:
            raise DataError(
                f"video has no readable frames or frame rate: {path} "
                f"(frames={num_frames}, fps={fps:g}, size={width}x{height})"
            )
        return VideoInfo(path, fps, num_frames, width, height, num_frames / fps)
    finally:
        container.close()


def uniform_indices(num_frames: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``num_frames`` (centres of equal segments)."""
    if num_frames <= 0 or count <= 0:
        raise ValueError(f"need num_frames > 0 and count > 0 (got {num_frames}, {count})")
    return [min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)]


def clip_indices(
    start_frame: int, end_frame: int, frames_per_clip: int, stride: int, position: float = 0.5
) -> list[int]:
    """Frame indices of one clip of ``frames_per_clip`` frames ``stride`` apart inside [start, end).

    ``position`` in [0, 1] places the clip inside the event (0 = start, 1 = end). An event shorter
    than the clip span repeats its last frame rather than reading outside the event, so a short
    event never borrows frames from its neighbour.
    """
    end_frame = max(end_frame, start_frame + 1)
    span = (frames_per_clip - 1) * stride + 1
    room = max(0, (end_frame - start_frame) - span)
    first = start_frame + int(round(min(max(position, 0.0), 1.0) * room))
    return [min(first + i * stride, end_frame - 1) for i in range(frames_per_clip)]


def stride_for_fps(video_fps: float, target_fps: float | None) -> int:
    """Frame step that samples a video at about ``target_fps`` (1 when not set or faster than the video)."""
    if not target_fps or target_fps <= 0 or video_fps <= target_fps:
        return 1
    return max(1, int(round(video_fps / target_fps)))


def event_frame_range(info: VideoInfo, start_s: float, end_s: float) -> tuple[int, int]:
    """[start, end) frame indices of an event given in seconds, clamped to the video."""
    start = min(max(0, int(math.floor(start_s * info.fps))), info.num_frames - 1)
    end = min(info.num_frames, max(start + 1, int(math.ceil(end_s * info.fps))))
    return start, end


def tta_positions(count: int) -> list[float]:
    """Positions (0..1) of ``count`` test-time clips spread evenly over an event; one clip sits in the middle."""
    if count <= 1:
        return [0.5]
    return [i / (count - 1) for i in range(count)]


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    stats: DecodeStats | None = None,
) -> np.ndarray:
    """Frames ``indices`` of a video as uint8 RGB ``[len(indices), H, W, 3]``, in the order given.

    The file is decoded once: one seek to the keyframe before the first needed frame, then frames
    are decoded up to the last needed one and kept only if requested (duplicates allowed).
    ``size=(w, h)`` resizes during colour conversion.
    """
    import av

    path = Path(path)
    if len(indices) == 0:
        raise ValueError("read_frames needs at least one index")
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0:
        raise DataError(f"negative frame index {wanted[0]} requested from {path}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        _set_threads(stream)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        header_frames = int(stream.frames or 0)
        if header_frames > 0 and wanted[-1] >= header_frames:
            raise DataError(
                f"frame {wanted[-1]} requested from {path}, which has {header_frames} frames (0..{header_frames - 1})"
            )
        frames = _decode_wanted(container, stream, fps, wanted, size, path, stats)
    except av.error.FFmpegError as err:
        raise DataError(f"cannot decode video (corrupt): {path} ({err})") from None
    finally:
        container.close()
    if stats is not None:
        stats.files_opened += 1
    return np.stack([frames[int(i)] for i in indices])


def _frame_index(frame, stream, fps: float, start_pts: int) -> int | None:  # noqa: ANN001
    if frame.pts is None or not fps:
        return None
    return int(round(float((frame.pts - start_pts) * stream.time_base) * fps))


def _decode_wanted(
    container, stream, fps: float, wanted: list[int], size, path: Path, stats: DecodeStats | None  # noqa: ANN001
) -> dict[int, np.ndarray]:
    start_pts = stream.start_time or 0
    first, last = wanted[0], wanted[-1]
    wanted_set = frozenset(wanted)
    seek = first > 0 and bool(fps) and stream.time_base is not None
    # Second pass decodes from the start: used when a seek lands after the first needed frame
    # or the stream has no timestamps (then frames are numbered by decode order).
    for from_start in ((False, True) if seek else (True,)):
        out: dict[int, np.ndarray] = {}
        decoded = 0
        if from_start:
            if seek:
                container.seek(0, stream=stream)
        else:
            target = start_pts + int(first / fps / float(stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            if stats is not None:
                stats.seeks += 1
        retry = False
        for frame in container.decode(stream):
            idx = _frame_index(frame, stream, fps, start_pts)
            if idx is None:
                if not from_start:
                    retry = True
                    break
                idx = decoded
            decoded += 1
            if decoded == 1 and idx > first and not from_start:
                retry = True
                break
            if idx in wanted_set and idx not in out:
                out[idx] = _to_rgb(frame, size)
            if idx >= last:
                break
        if stats is not None:
            stats.add(path, decoded)
        if retry:
            continue
        missing = [i for i in wanted if i not in out]
        if missing:
            if not out:
                raise DataError(f"no frames could be decoded at index {first} or later from {path}")
            have = max(out)
            if missing[-1] > have:
                raise DataError(
                    f"frame {missing[-1]} requested from {path}, which decodes to only {have + 1} frames"
                )
            # Timestamps that skip (variable frame rate) leave holes: take the nearest earlier frame.
            for i in missing:
                earlier = [k for k in out if k <= i]
                out[i] = out[max(earlier)] if earlier else out[min(out)]
        return out
    raise DataError(f"cannot seek in video: {path}")


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:  # noqa: ANN001
    if size is None:
        return frame.to_ndarray(format="rgb24")
    width, height = int(size[0]), int(size[1])
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def read_clips(
    path: str | Path,
    clips: Sequence[Sequence[int]],
    size: tuple[int, int] | None = None,
    stats: DecodeStats | None = None,
) -> list[np.ndarray]:
    """Several clips of one video (e.g. the TTA clips of an event) from a single decode of the union of their frames."""
    flat = [int(i) for clip in clips for i in clip]
    frames = read_frames(path, flat, size=size, stats=stats)
    out, pos = [], 0
    for clip in clips:
        out.append(frames[pos : pos + len(clip)])
        pos += len(clip)
    return out


def write_mp4(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float, crf: int = 23,
              preset: str = "veryfast") -> Path:
    """Encode RGB uint8 frames [T, H, W, 3] as H.264 (the synthetic generators' videos)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
