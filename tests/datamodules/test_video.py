"""datamodules.video: exact frames after a seek, order and duplicates, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from datamodules.video import (
    DecodeStats,
    clip_indices,
    event_frame_range,
    probe_video,
    read_clips,
    read_frames,
    stride_for_fps,
    tta_positions,
    uniform_indices,
)
from suite.errors import DataError


def _write(path: Path, n: int = 40, codec: str = "libx264", fps: int = 10, size: int = 32, gop: int = 8) -> Path:
    """A video whose frame i has a brightness ramp unique to i, with keyframes every ``gop`` frames."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p" if codec != "mjpeg" else "yuvj420p"
        s.gop_size = gop
        if codec == "libx264":
            s.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(n):
            img = np.full((size, size, 3), (i * 6) % 256, np.uint8)
            img[: size // 2, :, 0] = 255 - (i * 6) % 256
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _all_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("mpeg4", ".avi"), ("mjpeg", ".avi")])
def test_read_frames_matches_sequential_decode(tmp_path: Path, codec: str, suffix: str) -> None:
    path = _write(tmp_path / f"v{suffix}", codec=codec)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (40, 32, 32)
    assert info.fps == pytest.approx(10.0) and info.duration_s == pytest.approx(4.0)
    ref = _all_frames(path)
    wanted = [33, 17, 17, 39, 20]
    got = read_frames(path, wanted)
    assert got.shape == (5, 32, 32, 3) and got.dtype == np.uint8
    for k, frame in zip(wanted, got, strict=True):
        assert np.abs(frame.astype(int) - ref[k]).mean() < 1.0, f"frame {k} differs"


def test_resize_and_seek_decodes_less_than_whole_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.mp4", n=80, gop=8)
    stats = DecodeStats()
    out = read_frames(path, [70, 72], size=(20, 16), stats=stats)
    assert out.shape == (2, 16, 20, 3)
    assert stats.seeks == 1 and stats.frames_decoded < 20  # from the keyframe before 70, not from 0


def test_read_clips_decodes_union_once(tmp_path: Path) -> None:
    # An event late in a long-GOP video: each clip decoded on its own restarts from the keyframe.
    path = _write(tmp_path / "v.mp4", n=120, gop=120)
    clips = [clip_indices(80, 110, 8, 1, p) for p in tta_positions(5)]
    once, separate = DecodeStats(), DecodeStats()
    arrays = read_clips(path, clips, stats=once)
    for clip in clips:
        read_frames(path, clip, stats=separate)
    assert [a.shape[0] for a in arrays] == [8] * 5
    assert once.files_opened == 1 and separate.files_opened == 5
    assert once.frames_decoded <= separate.frames_decoded / 3
    np.testing.assert_array_equal(arrays[4], read_frames(path, clips[4]))


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.mp4", n=20)
    with pytest.raises(DataError, match=r"v\.mp4.*20 frames"):
        read_frames(path, [3, 20])
    with pytest.raises(DataError, match="not found.*missing.mp4"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="empty.*empty.mp4"):
        read_frames(tmp_path / "empty.mp4", [0])
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(DataError, match="junk.mp4"):
        probe_video(tmp_path / "junk.mp4")


def test_index_helpers() -> None:
    assert uniform_indices(10, 5) == [1, 3, 5, 7, 9]
    assert uniform_indices(3, 5) == [0, 0, 1, 2, 2]
    assert clip_indices(10, 30, 4, 2, 0.0) == [10, 12, 14, 16]
    assert clip_indices(10, 30, 4, 2, 1.0) == [23, 25, 27, 29]
    assert clip_indices(10, 13, 5, 1, 0.5) == [10, 11, 12, 12, 12]  # short event: repeat, never leave it
    assert stride_for_fps(30.0, 10.0) == 3 and stride_for_fps(8.0, 10.0) == 1 and stride_for_fps(25.0, None) == 1
    assert tta_positions(5) == [0.0, 0.25, 0.5, 0.75, 1.0] and tta_positions(1) == [0.5]


def test_event_frame_range_clamps(tmp_path: Path) -> None:
    info = probe_video(_write(tmp_path / "v.mp4", n=40))
    assert event_frame_range(info, 1.0, 2.0) == (10, 20)
    assert event_frame_range(info, 3.5, 9.0) == (35, 40)
