"""Synthetic LEGO data in the user layout: ``manifest.csv`` + ``target_parts.txt`` + image folders.

Three sources with a real domain gap, like the seed's inventory:

- ``legacy``: clean top-down renders on white, every colour labelled;
- ``b200c``: multi-view renders (perspective, scale, rotation) whose colour is unknown (9999);
- ``real``: camera-like captures of one piece in three views (one ``group_id`` per piece) with a
  cluttered background, a drop shadow, blur, a colour cast and sensor noise, saved as JPEG.

Parts are told apart by outline and stud layout, colours by hue, so both heads have something to
learn. One non-target part is written too, so ``target_parts.txt`` filtering is exercised, and a
few real captures know only their colour.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datamodules.synthetic.common import SyntheticDataset
from suite.io import atomic_write_csv

COLOR_UNKNOWN = 9999
# Rebrickable colour id -> RGB
COLORS: dict[int, tuple[int, int, int]] = {
    0: (33, 33, 33), 1: (0, 85, 191), 2: (35, 120, 65), 4: (201, 26, 9), 14: (242, 205, 55),
}
# part id -> (footprint in studs (w, h), outline kind)
PARTS: dict[str, tuple[tuple[int, int], str]] = {
    "3001": ((4, 2), "rect"),
    "3003": ((2, 2), "rect"),
    "3022": ((2, 2), "plate"),
    "3062": ((1, 1), "round"),
    "2357": ((2, 2), "corner"),
    "3040": ((1, 2), "slope"),
}
NON_TARGET_PARTS: dict[str, tuple[tuple[int, int], str]] = {"99999": ((3, 3), "cross")}


def _part_mask(kind: str, studs: tuple[int, int], unit: float, size: int) -> tuple[np.ndarray, list]:
    """Binary silhouette (size x size, centred) and stud centres of a part seen from above."""
    w, h = studs[0] * unit, studs[1] * unit
    c = size / 2
    x0, y0, x1, y1 = c - w / 2, c - h / 2, c + w / 2, c + h / 2
    mask = np.zeros((size, size), np.uint8)
    studs_xy = [(x0 + (i + 0.5) * unit, y0 + (j + 0.5) * unit) for i in range(studs[0]) for j in range(studs[1])]
    if kind in ("rect", "plate"):
        cv2.rectangle(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)
    elif kind == "round":
        cv2.circle(mask, (int(c), int(c)), int(unit * 0.6), 1, -1)
    elif kind == "corner":
        pts = np.array([[x0, y0], [x1, y0], [x1, c], [c, c], [c, y1], [x0, y1]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
        studs_xy = [p for p in studs_xy if not (p[0] > c and p[1] > c)]
    elif kind == "slope":
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
        studs_xy = studs_xy[:1]
    elif kind == "cross":
        t = unit / 2
        cv2.rectangle(mask, (int(x0), int(c - t)), (int(x1), int(c + t)), 1, -1)
        cv2.rectangle(mask, (int(c - t), int(y0)), (int(c + t), int(y1)), 1, -1)
        studs_xy = [(c, c)]
    return mask, studs_xy


def render_part(
    rng: np.random.Generator, part: str, color: tuple[int, int, int], size: int, background: np.ndarray,
    perspective: float = 0.0, shadow: bool = False,
) -> np.ndarray:
    """Draw one part (rotated, scaled, optionally perspective-warped) onto ``background`` (HxWx3 float)."""
    studs, kind = {**PARTS, **NON_TARGET_PARTS}[part]
    big = size * 2  # draw at 2x and downsample, for smooth edges
    unit = big / 6.5 * rng.uniform(0.85, 1.1)
    mask, studs_xy = _part_mask(kind, studs, unit, big)
    col = np.array(color, np.float32)
    layer = np.zeros((big, big, 3), np.float32)
    layer[:] = col
    if kind == "plate":  # plates: a lighter rim shows their thinness
        edge = mask - cv2.erode(mask, np.ones((int(unit * 0.25), int(unit * 0.25)), np.uint8))
        layer[edge > 0] = np.clip(col * 1.35 + 30, 0, 255)
    if kind == "slope":  # the slope's shading gradient
        ramp = np.linspace(0.55, 1.15, big, dtype=np.float32)[None, :, None]
        layer = np.clip(layer * ramp, 0, 255)
    for sx, sy in studs_xy:
        cv2.circle(layer, (int(sx), int(sy)), int(unit * 0.3), tuple(float(v) for v in np.clip(col * 0.7, 0, 255)), -1)
        cv2.circle(layer, (int(sx - unit * 0.06), int(sy - unit * 0.06)), int(unit * 0.22),
                   tuple(float(v) for v in np.clip(col * 1.25 + 25, 0, 255)), -1)
    outline = mask - cv2.erode(mask, np.ones((3, 3), np.uint8))
    layer[outline > 0] *= 0.55
    angle = rng.uniform(0, 360)
    rot = cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0)
    rot[:, 2] += rng.uniform(-0.08, 0.08, 2) * big
    layer = cv2.warpAffine(layer, rot, (big, big), flags=cv2.INTER_LINEAR)
    mask_f = cv2.warpAffine(mask.astype(np.float32), rot, (big, big), flags=cv2.INTER_LINEAR)
    if perspective > 0:
        src = np.float32([[0, 0], [big, 0], [big, big], [0, big]])
        dst = src + rng.uniform(-perspective, perspective, (4, 2)).astype(np.float32) * big
        hom = cv2.getPerspectiveTransform(src, dst)
        layer = cv2.warpPerspective(layer, hom, (big, big), flags=cv2.INTER_LINEAR)
        mask_f = cv2.warpPerspective(mask_f, hom, (big, big), flags=cv2.INTER_LINEAR)
    layer = cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(mask_f, (size, size), interpolation=cv2.INTER_AREA)[..., None]
    out = background.copy()
    if shadow:
        offset = np.float32([[1, 0, size * 0.06], [0, 1, size * 0.08]])
        shade = cv2.GaussianBlur(cv2.warpAffine(alpha[..., 0], offset, (size, size)), (0, 0), size * 0.03)
        out *= 1 - 0.45 * shade[..., None]
    return out * (1 - alpha) + layer * alpha


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A light, textured tray background with a few distractor strokes and specks."""
    low = cv2.resize(rng.normal(0, 1, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    bg = rng.uniform(170, 225) + 14 * low
    for _ in range(int(rng.integers(2, 6))):
        p1, p2 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        shade = tuple(float(v) for v in rng.uniform(90, 200, 3))
        cv2.line(bg, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), shade, int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(3, 10))):
        p = rng.integers(0, size, 2)
        speck = tuple(float(v) for v in rng.uniform(60, 160, 3))
        cv2.circle(bg, (int(p[0]), int(p[1])), int(rng.integers(1, 3)), speck, -1)
    return bg


def _camera(rng: np.random.Generator, image: np.ndarray, cast: np.ndarray) -> np.ndarray:
    """Colour cast, defocus/motion blur and sensor noise of a cheap camera."""
    image = image * cast
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.4))
    else:
        k = int(rng.integers(2, 5))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        image = cv2.filter2D(image, -1, kernel)
    return image + rng.normal(0, rng.uniform(3, 9), image.shape)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"cannot write {path}")


def write(out: Path, seed: int, size: int, legacy_per_combo: int, b200c_views: int, real_captures: int) -> None:
    """The three sources, ``manifest.csv`` and ``target_parts.txt`` under the empty folder ``out``;
    ``real_captures`` captures (3 views each) per part."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    white = np.full((size, size, 3), 255.0, np.float32)
    parts = list(PARTS) + list(NON_TARGET_PARTS)
    for part in parts:
        for color_id, rgb in COLORS.items():
            for k in range(legacy_per_combo):
                path = f"legacy/{part}/{part}_{color_id}_{k}.png"
                _save(out / path, render_part(rng, part, rgb, size, white))
                rows.append({"path": path, "part_id": part, "color_id": str(color_id), "source": "legacy",
                             "group_id": f"legacy:{part}:{color_id}:{k}"})
        for view in range(b200c_views):
            rgb = COLORS[int(rng.choice(list(COLORS)))]
            bg = np.full((size, size, 3), rng.uniform(225, 255), np.float32)
            path = f"b200c/{part}/{view:03d}.png"
            _save(out / path, render_part(rng, part, rgb, size, bg, perspective=0.12))
            rows.append({"path": path, "part_id": part, "color_id": str(COLOR_UNKNOWN), "source": "b200c",
                         "group_id": f"b200c:{part}"})
    captures = [(p, True) for p in parts for _ in range(real_captures)]
    captures += [(str(rng.choice(list(PARTS))), False) for _ in range(max(3, real_captures))]
    for n, (part, part_known) in enumerate(captures):
        color_id = int(rng.choice(list(COLORS)))
        cast = rng.uniform(0.82, 1.12, 3).astype(np.float32)
        for view in ("front", "back", "bottom"):
            image = _camera(rng, render_part(rng, part, COLORS[color_id], size, _clutter(rng, size),
                                             perspective=0.06, shadow=True), cast)
            path = f"real/{part if part_known else 'unsorted'}/{n:04d}_{view}.jpg"
            _save(out / path, image)
            rows.append({"path": path, "part_id": part if part_known else "", "color_id": str(color_id),
                         "source": "real", "group_id": f"capture{n:04d}"})
    atomic_write_csv(out / "manifest.csv", rows, fieldnames=["path", "part_id", "color_id", "source", "group_id"])
    (out / "target_parts.txt").write_text("# parts the sorter must recognise, one per line\n" + "\n".join(PARTS) + "\n")


GENERATOR = SyntheticDataset(
    "lego", write,
    defaults={"size": 64, "legacy_per_combo": 2, "b200c_views": 8, "real_captures": 40}, version=1,
    description="legacy renders, b200c multi-view renders (colour 9999) and real-like captures (3 views, one "
                "group each): manifest.csv + target_parts.txt + image folders",
)
