"""Segmentation predictor: images -> foreground masks at the input size, overlays, foreground fraction.

    python predict.py <segmentation run | its bundle> <images or folders ...> [large=auto|tile|resize]
                      [overlap=0.25] [threshold=<0-1>] [batch=8]

Inputs: image files, or folders searched recursively for images (png, jpg, bmp, tif), read as training
reads them (``datamodules.images.read_image``: RGB, EXIF orientation applied). The graph normalises
and gives the foreground probability per pixel; a pixel is foreground above the run's threshold
(``threshold=`` overrides it).

Images are never cropped. A run's evaluation saw whole images: padded to a multiple of the net's stride
(32) and, above ``tile_size`` px (the bundle's options, ``model.eval_tile``, 1024 by default), in
overlapping tiles of that size whose probabilities are blended with weights that fall off towards each
tile's edges, so the tiles leave no seams. A predictor does the same, so its masks are those the reported
metrics scored. For a run trained on resized images (``data.image_size``) an image larger than the
training size (``train_size``) is

- ``large=resize``: resized to the training size and its probabilities resized back (what the run's
  evaluation does when it trained with ``data.image_size``);
- ``large=tile``: run whole or in tiles as above, at its own scale.

``large=auto`` (default) resizes for a run trained on resized images (the spec's ``resized_to``) and
tiles for a run trained on crops or whole images. ``overlap`` is the tiles' overlap (a fraction of the
tile). Bundles exported before ``tile_size`` existed tile at the training size.

Outputs: ``pictures/masks/<name>.png`` (0/255, the input's size), ``pictures/overlays/<name>.png``
(foreground tinted red); ``predictions.csv`` extras ``width``, ``height``, ``foreground_fraction``,
``mean_probability``, ``mode`` (whole, tile, resize), ``tiles``, ``mask``, ``overlay``. ``predict_bytes``
(the service) answers the foreground fraction and the mask as a base64 PNG.

Imports numpy and OpenCV only (no torch): it runs an ONNX bundle on a Raspberry Pi.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datamodules.images import IMAGE_EXTENSIONS, read_image
from deploy.predictors.base import ItemResult, Predictor, find_images
from suite.contracts import PredictionRow
from suite.errors import ConfigError, DataError

GRAPH = "model"
#: the U-Net's output stride: inputs are padded to a multiple of it, as the run's evaluation pads them
STRIDE = 32
LARGE_MODES = ("tile", "resize")
#: share of red in the overlay's foreground pixels
TINT = 0.45


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with steps of at most ``stride``; the
    last tile ends on the edge (it overlaps its neighbour more), so every tile has the training size."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_weights(tile: int, ramp: int) -> np.ndarray:
    """1-D weights of a tile's pixels: 1 inside, falling linearly over ``ramp`` pixels towards both edges
    (never 0, so a pixel that only one tile covers keeps that tile's value)."""
    index = np.arange(tile, dtype=np.float32)
    edge = np.minimum(index + 1, tile - index)
    return np.clip(edge / max(ramp, 1), 1.0 / max(ramp, 1), 1.0).astype(np.float32)


def overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its foreground tinted red (RGB uint8)."""
    out = rgb.astype(np.float32)
    fg = mask > 0
    out[fg] = (1 - TINT) * out[fg] + TINT * np.array([255.0, 0.0, 0.0], np.float32)
    return out.round().astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError("cannot encode the mask as PNG")
    return data.tobytes()


class SegmentationPredictor(Predictor):
    """Foreground masks of images with a segmentation run or its bundle."""

    task = "segmentation"
    defaults = {
        # images larger than the training size: tile or resize; auto = resize for a run trained on resized
        # images (data.image_size), tile for one trained on crops or whole images
        "large": "auto",
        "overlap": 0.25,  # tiles overlap by this fraction of the tile
        "threshold": None,  # foreground above this probability (default: the run's model.threshold)
        "batch": 8,  # tiles per call of the graph
    }

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        super().__init__(backend, options)
        run = self.meta.get("options", {})
        if self.options["large"] == "auto":
            self.options["large"] = "resize" if self.meta.get("extras", {}).get("resized_to") else "tile"
        if self.options["large"] not in LARGE_MODES:
            raise ConfigError(f"predict option large={self.options['large']!r}: choose one of {', '.join(LARGE_MODES)}")
        if not 0.0 <= float(self.options["overlap"]) < 1.0:
            raise ConfigError(f"predict option overlap={self.options['overlap']}: expected a fraction in [0, 1)")
        if int(self.options["batch"]) < 1:
            raise ConfigError(f"predict option batch={self.options['batch']}: expected at least 1")
        given = self.options["threshold"]
        try:
            self.threshold = float(run.get("threshold", 0.5) if given is None else given)
        except (TypeError, ValueError):
            raise ConfigError(f"predict option threshold={given!r}: expected a number in (0, 1)") from None
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"predict option threshold={given}: expected a number in (0, 1)")
        size = run.get("train_size")
        self.train_size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size else None
        tile = run.get("tile_size")
        self.tile_size: int | None = int(tile) if tile else None
        self.output = self.meta["graphs"][GRAPH]["outputs"][0]

    # -- the model ---------------------------------------------------------------------------------
    def _run(self, images: np.ndarray) -> np.ndarray:
        """Foreground probabilities ``[N, H, W]`` of RGB uint8 images ``[N, H, W, 3]``, in batches."""
        out = []
        step = int(self.options["batch"])
        for start in range(0, len(images), step):
            chunk = images[start:start + step].transpose(0, 3, 1, 2).astype(np.float32)
            out.append(np.asarray(self.backend.run(GRAPH, chunk)[self.output], np.float32)[:, 0])
        return np.concatenate(out)

    def _run_padded(self, images: np.ndarray) -> np.ndarray:
        """:meth:`_run` on images padded (reflected) at the bottom and right to a multiple of the net's stride,
        the probabilities cut back to the images' size: what the run's evaluation did."""
        height, width = images.shape[1:3]
        pad_h, pad_w = -height % STRIDE, -width % STRIDE
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "edge"
            images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
        return self._run(images)[:, :height, :width]

    def _tiled(self, rgb: np.ndarray, tile_h: int, tile_w: int) -> tuple[np.ndarray, int]:
        height, width = rgb.shape[:2]
        tile_h, tile_w = min(tile_h, height), min(tile_w, width)
        overlap = float(self.options["overlap"])
        stride_h = max(1, round(tile_h * (1 - overlap)))
        stride_w = max(1, round(tile_w * (1 - overlap)))
        boxes = [(y, x) for y in tile_starts(height, tile_h, stride_h) for x in tile_starts(width, tile_w, stride_w)]
        weight = np.outer(blend_weights(tile_h, tile_h - stride_h), blend_weights(tile_w, tile_w - stride_w))
        total = np.zeros((height, width), np.float32)
        norm = np.zeros((height, width), np.float32)
        step = int(self.options["batch"])
        for start in range(0, len(boxes), step):
            chunk = boxes[start:start + step]
            probs = self._run_padded(np.stack([rgb[y:y + tile_h, x:x + tile_w] for y, x in chunk]))
            for (y, x), prob in zip(chunk, probs, strict=True):
                total[y:y + tile_h, x:x + tile_w] += prob * weight
                norm[y:y + tile_h, x:x + tile_w] += weight
        return total / norm, len(boxes)

    def probability(self, rgb: np.ndarray) -> tuple[np.ndarray, str, int]:
        """``(foreground probability [H, W] at the image's size, mode, tiles)`` of one RGB uint8 image."""
        height, width = rgb.shape[:2]
        larger = self.train_size is not None and (height > self.train_size[0] or width > self.train_size[1])
        if larger and self.options["large"] == "resize":
            th, tw = self.train_size
            small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
            prob = self._run_padded(small[None])[0]
            return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR), "resize", 1
        if self.tile_size is not None:  # the evaluation's rule: whole up to tile_size, tiles of it above
            larger = height > self.tile_size or width > self.tile_size
            tile_h = tile_w = self.tile_size
        elif larger:  # a bundle from before tile_size: tiles of the training size
            tile_h, tile_w = self.train_size
        if not larger:
            return self._run_padded(rgb[None])[0], "whole", 1
        prob, tiles = self._tiled(rgb, tile_h, tile_w)
        return prob, "tile", tiles

    def segment(self, rgb: np.ndarray) -> dict[str, Any]:
        prob, mode, tiles = self.probability(rgb)
        mask = np.where(prob > self.threshold, 255, 0).astype(np.uint8)
        return {"mask": mask, "foreground_fraction": float((mask > 0).mean()),
                "mean_probability": float(prob.mean()), "mode": mode, "tiles": tiles}

    # -- inputs and outputs ------------------------------------------------------------------------
    def discover(self, paths: Sequence[Path]) -> list[tuple[Path, str, str]]:
        """``(image, item id, picture name)``: a file is its own name, a folder's images are named relative to
        it; pictures are named by the id without its suffix unless two ids would share a picture."""
        items = find_images(paths)
        names = [str(Path(i.lstrip("/")).with_suffix("")) for _, i in items]
        if len(set(names)) < len(names):  # a.png and a.jpg side by side
            names = [i.lstrip("/").replace(".", "_") for _, i in items]
        return [(p, i, n) for (p, i), n in zip(items, names, strict=True)]

    def predict_item(self, item: tuple[Path, str, str]) -> ItemResult:
        path, item_id, name = item
        rgb = read_image(path)
        result = self.segment(rgb)
        mask_file, overlay_file = f"masks/{name}.png", f"overlays/{name}.png"
        row = PredictionRow(item_id=item_id, extras={
            "width": rgb.shape[1], "height": rgb.shape[0],
            "foreground_fraction": round(result["foreground_fraction"], 6),
            "mean_probability": round(result["mean_probability"], 6),
            "mode": result["mode"], "tiles": result["tiles"],
            "mask": f"pictures/{mask_file}", "overlay": f"pictures/{overlay_file}",
        })
        return ItemResult(rows=[row], pictures={mask_file: result["mask"], overlay_file: overlay(rgb, result["mask"])})

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        fractions = [float(r.extras["foreground_fraction"]) for r in rows]
        modes = [r.extras["mode"] for r in rows]
        return {"images": len(rows), "threshold": self.threshold,
                "mean_foreground_fraction": round(float(np.mean(fractions)), 6) if fractions else 0.0,
                "images_with_foreground": sum(f > 0 for f in fractions),
                "tiled_images": modes.count("tile"), "resized_images": modes.count("resize")}

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        """One upload: ``foreground_fraction``, ``width``, ``height``, ``mode``, ``tiles``, ``threshold`` and
        ``mask_png_base64`` (the mask, 0/255, at the upload's size)."""
        suffix = Path(filename or "").suffix.lower()
        # the training reader (EXIF orientation, 16-bit, palettes) reads files: the upload becomes one
        with tempfile.NamedTemporaryFile(suffix=suffix if suffix in IMAGE_EXTENSIONS else ".png") as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                rgb = read_image(tmp.name)
            except DataError as err:
                raise DataError(f"{filename or 'upload'}: {str(err).replace(tmp.name, 'the upload')}") from None
        result = self.segment(rgb)
        return {"filename": filename, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                "foreground_fraction": round(result["foreground_fraction"], 6),
                "mean_probability": round(result["mean_probability"], 6), "mode": result["mode"],
                "tiles": result["tiles"], "threshold": self.threshold,
                "mask_png_base64": base64.b64encode(encode_png(result["mask"])).decode("ascii")}
