"""Synthetic pen-camera videos with a rare "tail" behaviour, written in the behavior task's user layout.

Several cameras, each with its own look (background hue, texture, lighting, sensor noise), record
videos made of back-to-back events. Ordinary behaviours: an animal walking across, two animals
standing apart, one animal bobbing its head. The tail behaviour (cross-sucking): two animals side
by side, the head of one pushing rhythmically against the other's flank.

With ``confound=True`` the training pool's tail events all happen in ``tail_cameras`` cameras, so a
camera's look predicts the label, which is the failure the training plan diagnosed. Test cameras
are never in the training pool and carry tail events at the base rate.

Layout written (the behavior task's user layout, a ``data.root``; the DataModule builds train/val
from ``events.csv`` with the split strategy of the experiment):
    videos/cam<c>_v<v>.mp4
    events.csv            training-pool events: video_path,video_id,start_s,end_s,label,camera,event_id
    test.csv              events of the held-out cameras
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from datamodules.synthetic.common import SyntheticDataset
from datamodules.video import write_mp4

NORMAL_BEHAVIOURS = ("walk", "pair", "bob")


def _camera_look(rng: np.random.Generator, size: int) -> dict[str, Any]:
    hue = rng.random()
    light = rng.uniform(0.45, 0.95)
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.35, 0.8), light)) * 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.6)
    texture = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * freq) * rng.uniform(8, 25)
    gradient = (yy / size - 0.5) * rng.uniform(-40, 40)
    background = np.clip(rgb[None, None, :] + (texture + gradient)[..., None], 0, 255).astype(np.float32)
    return {"background": background, "noise": float(rng.uniform(2, 12)), "animal": float(rng.uniform(20, 70))}


def _draw_animal(img: np.ndarray, x: float, y: float, scale: float, shade: float, head_dx: float) -> None:
    s = img.shape[0]
    body = (int(x * s), int(y * s))
    axes = (max(2, int(0.12 * s * scale)), max(1, int(0.07 * s * scale)))
    color = (shade, shade * 0.9, shade * 0.8)
    cv2.ellipse(img, body, axes, 0, 0, 360, color, -1, lineType=cv2.LINE_AA)
    head = (int((x + head_dx) * s), int(y * s))
    cv2.circle(img, head, max(1, int(0.05 * s * scale)), color, -1, lineType=cv2.LINE_AA)


def _render_event(
    behaviour: str, look: dict[str, Any], frames: int, size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    out = []
    shade = look["animal"]
    x0, y0 = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)
    direction = rng.choice([-1.0, 1.0])
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(frames):
        img = look["background"].copy()
        if behaviour == "walk":
            x = x0 + direction * (t / frames - 0.5) * 0.5
            _draw_animal(img, x, y0, 1.0, shade, 0.14 * direction)
        elif behaviour == "pair":
            _draw_animal(img, 0.25, y0 + 0.01 * np.sin(t + phase), 1.0, shade, 0.14)
            _draw_animal(img, 0.75, y0, 1.0, shade, -0.14)
        elif behaviour == "bob":
            _draw_animal(img, x0, y0, 1.0, shade, 0.14 * direction * (1.0 + 0.3 * np.sin(0.6 * t + phase)))
        else:  # tail: nose of one animal pushing rhythmically into the other's flank
            push = 0.5 + 0.5 * np.sin(2.2 * t + phase)
            _draw_animal(img, 0.62, y0, 1.0, shade, 0.14)
            _draw_animal(img, 0.28 + 0.06 * push, y0 + 0.04, 1.0, shade, 0.16 + 0.04 * push)
        img = img + rng.normal(0, look["noise"], img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _assign_labels(
    cameras: list[int], tail_cams: set[int], n_videos: int, n_events: int, tail_share: float, confound: bool,
    rng: np.random.Generator,
) -> dict[tuple[int, int], list[bool]]:
    """Which events are tail, per (camera, video): uniform, or all in the tail cameras when confounded."""
    slots = [(c, v, e) for c in cameras for v in range(n_videos) for e in range(n_events)]
    n_tail = max(1, int(round(tail_share * len(slots))))
    pool = [s for s in slots if s[0] in tail_cams] if confound else slots
    n_tail = min(n_tail, len(pool) - 1)
    chosen = {pool[i] for i in rng.choice(len(pool), size=n_tail, replace=False)}
    return {(c, v): [(c, v, e) in chosen for e in range(n_events)] for c in cameras for v in range(n_videos)}


def write(
    folder: Path, seed: int, cameras: int, test_cameras: int, tail_cameras: int, videos_per_camera: int,
    events_per_video: int, event_s: float, fps: int, size: int, tail_share: float, confound: bool,
) -> None:
    """``cameras`` training-pool cameras and ``test_cameras`` held-out ones, ``videos_per_camera`` videos
    each of ``events_per_video`` back-to-back events of ``event_s`` seconds, ``size`` px at ``fps``."""
    rng = np.random.default_rng(seed)
    frames_per_event = int(round(event_s * fps))
    looks = [_camera_look(rng, size) for _ in range(cameras + test_cameras)]
    train_cams = list(range(cameras))
    test_cams = list(range(cameras, cameras + test_cameras))
    tail_cams = set(int(c) for c in rng.choice(train_cams, size=min(tail_cameras, cameras), replace=False))
    labels = _assign_labels(train_cams, tail_cams, videos_per_camera, events_per_video, tail_share, confound, rng)
    labels.update(_assign_labels(test_cams, set(test_cams), videos_per_camera, events_per_video, tail_share, False,
                                 rng))
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for cam in train_cams + test_cams:
        for v in range(videos_per_camera):
            name = f"cam{cam}_v{v}"
            frames: list[np.ndarray] = []
            for e, is_tail in enumerate(labels[(cam, v)]):
                behaviour = "tail" if is_tail else NORMAL_BEHAVIOURS[int(rng.integers(len(NORMAL_BEHAVIOURS)))]
                frames += _render_event(behaviour, looks[cam], frames_per_event, size, rng)
                start = e * event_s
                rows.append({
                    "video_path": f"videos/{name}.mp4", "video_id": name, "start_s": round(start, 3),
                    "end_s": round(start + event_s, 3), "label": "tail" if is_tail else "normal",
                    "camera": f"cam{cam}", "event_id": f"{name}_e{e}",
                })
            write_mp4(folder / "videos" / f"{name}.mp4", frames, fps, crf=20, preset="ultrafast")
    events = pd.DataFrame(rows)
    is_test = events["camera"].isin([f"cam{c}" for c in test_cams])
    events[~is_test].to_csv(folder / "events.csv", index=False)
    events[is_test].to_csv(folder / "test.csv", index=False)


GENERATOR = SyntheticDataset(
    "behavior", write,
    defaults={"cameras": 6, "test_cameras": 2, "tail_cameras": 2, "videos_per_camera": 2, "events_per_video": 6,
              "event_s": 2.0, "fps": 8, "size": 48, "tail_share": 0.15, "confound": True},
    version=3,
    description="pen cameras with distinct looks, videos of 2 s events with a rare tail behaviour (confounded "
                "with the camera by default): videos/*.mp4, events.csv (training pool), test.csv (held-out cameras)",
)
