"""Stage-1 motion detector on hand-made frames, and tools.score_motion on a hand-made sequence."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.motion import MotionCache, MotionDetector, read_frames
from suite.errors import DataError


def _scene(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.uniform(60, 160, (h // 10, w // 10, 3)).astype(np.float32), (w, h))
    return low.astype(np.uint8)


def moving_square(n: int = 8, size: int = 20) -> tuple[np.ndarray, list[tuple[int, int]]]:
    scene = _scene()
    frames, positions = [], []
    for t in range(n):
        f = scene.copy()
        x, y = 10 + t * 15, 50
        f[y:y + size, x:x + size] = (250, 20, 20)
        frames.append(f)
        positions.append((x, y))
    return np.stack(frames), positions


def test_moving_square_is_one_region_covering_its_path() -> None:
    frames, positions = moving_square()
    result = MotionDetector().detect(frames)
    assert len(result.regions) == 1
    x, y, w, h = result.regions[0].box
    assert x <= positions[0][0] + 2 and x + w >= positions[-1][0] + 18
    assert y <= 52 and y + h >= 68
    # per-frame masks follow the square
    for t, (px, py) in enumerate(positions):
        assert result.frame_masks[t, py + 10, px + 10]
        assert not result.frame_masks[t, 10, 150]


def test_global_brightness_change_is_not_a_region() -> None:
    scene = _scene().astype(np.float32)
    frames = np.stack([np.clip(scene + d, 0, 255).astype(np.uint8) for d in np.linspace(0, 60, 8)])
    result = MotionDetector().detect(frames)
    assert result.regions == []
    assert result.motion_fraction < 0.01


def test_brightness_change_with_square_still_finds_square() -> None:
    frames, _ = moving_square()
    frames = np.stack([np.clip(f.astype(np.int16) + 8 * t, 0, 255).astype(np.uint8) for t, f in enumerate(frames)])
    assert len(MotionDetector().detect(frames).regions) == 1


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="at least 2"):
        MotionDetector().detect(np.zeros((1, 20, 20, 3), np.uint8))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(b), np.zeros((30, 20, 3), np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        read_frames([a, b])
    bad = tmp_path / "c.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="c.jpg"):
        read_frames([a, bad])


def test_cache_returns_the_same_result(tmp_path: Path) -> None:
    frames, _ = moving_square()
    paths = []
    for t, f in enumerate(frames):
        p = tmp_path / "ev" / f"{t:03d}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        paths.append(p)
    cache = MotionCache(tmp_path / "cache", MotionDetector())
    first = cache.get(paths)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second = cache.get(paths)
    assert np.array_equal(first.frame_masks, second.frame_masks)
    assert [r.box for r in first.regions] == [r.box for r in second.regions]
    other = MotionCache(tmp_path / "cache", MotionDetector(threshold=60)).get(paths)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and other.frame_masks.shape == first.frame_masks.shape


def test_score_motion_on_a_cdnet_style_sequence(tmp_path: Path) -> None:
    from tools.score_motion import main

    frames, positions = moving_square(n=12)
    seq = tmp_path / "seq"
    (seq / "input").mkdir(parents=True)
    (seq / "groundtruth").mkdir()
    for t, (f, (x, y)) in enumerate(zip(frames, positions, strict=True)):
        cv2.imwrite(str(seq / "input" / f"in{t:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        gt = np.zeros(f.shape[:2], np.uint8)
        gt[y:y + 20, x:x + 20] = 255
        gt[y - 1, x:x + 20] = 170  # unknown boundary, ignored
        cv2.imwrite(str(seq / "groundtruth" / f"gt{t:06d}.png"), gt)
    out = tmp_path / "scores.json"
    assert main([str(seq), "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert set(scores) >= {"precision", "recall", "f_measure"}
    assert scores["f_measure"] > 0.8
