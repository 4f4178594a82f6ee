"""Segmentation predictor: whole, tiled or resized images, masks at the input size, overlays, the service answer.

A numpy backend stands in for the graph: a pixel's foreground probability is its red value / 255, so the
expected mask of any image is known, and a tiling that stitched wrongly (a seam, a gap, a shift) shows.
"""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deploy.predictors.segmentation import SegmentationPredictor, blend_weights, tile_starts
from suite.errors import ConfigError, DataError


class RedBackend:
    name = "numpy"
    hashes: dict[str, str] = {}

    def __init__(self, train_size: list[int] | None = (32, 32), threshold: float = 0.5, tile_size: int | None = None):
        self.shapes: list[tuple[int, ...]] = []
        self.meta = {
            "task": "segmentation", "heads": [{"name": "mask", "classes": ["background", "foreground"], "positive": 1}],
            "extras": {}, "graphs": {"model": {"input": "image", "outputs": ["foreground"],
                                               "input_shape": [None, 3, None, None]}},
            "options": {"threshold": threshold, "train_size": list(train_size) if train_size else None,
                        **({"tile_size": tile_size} if tile_size else {})},
        }

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        assert graph == "model" and array.dtype == np.float32 and array.shape[1] == 3
        self.shapes.append(array.shape)
        return {"foreground": array[:, :1] / 255.0}


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return rgb


def write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_tile_starts_cover_the_length_with_full_tiles() -> None:
    assert tile_starts(20, 32, 24) == [0]
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]
    assert tile_starts(64, 32, 32) == [0, 32]
    weights = blend_weights(32, 8)
    assert weights.min() > 0 and weights[8:24].min() == 1.0 and weights[0] < weights[4]


def test_large_images_are_tiled_at_the_training_size_without_seams() -> None:
    backend = RedBackend(train_size=(32, 32))
    predictor = SegmentationPredictor(backend, {"batch": 4})
    rgb = image(70, 101)
    prob, mode, tiles = predictor.probability(rgb)
    assert mode == "tile" and prob.shape == (70, 101)
    assert tiles == len(tile_starts(70, 32, 24)) * len(tile_starts(101, 32, 24))
    assert {s[1:] for s in backend.shapes} == {(3, 32, 32)} and max(s[0] for s in backend.shapes) <= 4
    np.testing.assert_allclose(prob, rgb[..., 0] / 255.0, atol=1e-5)  # blending equal values gives the value


def test_images_are_scored_as_the_runs_evaluation_scored_them() -> None:
    # a bundle with the evaluation's tile: whole up to it (padded to the stride, cut back), tiles of it above
    backend = RedBackend(train_size=(32, 32), tile_size=256)
    rgb = image(200, 133)
    prob, mode, tiles = SegmentationPredictor(backend).probability(rgb)
    assert (mode, tiles, prob.shape, backend.shapes) == ("whole", 1, (200, 133), [(1, 3, 224, 160)])
    np.testing.assert_allclose(prob, rgb[..., 0] / 255.0, atol=1e-6)
    large = RedBackend(train_size=(32, 32), tile_size=256)
    rgb = image(500, 333)
    prob, mode, tiles = SegmentationPredictor(large).probability(rgb)
    assert mode == "tile" and prob.shape == (500, 333) and {s[1:] for s in large.shapes} == {(3, 256, 256)}
    assert tiles == len(tile_starts(500, 256, 192)) * len(tile_starts(333, 256, 192)) == 6
    np.testing.assert_allclose(prob, rgb[..., 0] / 255.0, atol=1e-5)


def test_resize_mode_and_whole_images() -> None:
    backend = RedBackend(train_size=(32, 32))
    rgb = image(64, 96)
    prob, mode, tiles = SegmentationPredictor(backend, {"large": "resize"}).probability(rgb)
    assert (mode, tiles, prob.shape, backend.shapes) == ("resize", 1, (64, 96), [(1, 3, 32, 32)])
    small = image(20, 30)
    prob, mode, _ = SegmentationPredictor(RedBackend(train_size=(32, 32))).probability(small)
    assert mode == "whole" and prob.shape == (20, 30)
    # a run trained on whole images of any size: every image goes through whole
    whole = RedBackend(train_size=None)
    _, mode, _ = SegmentationPredictor(whole).probability(rgb)
    assert mode == "whole" and whole.shapes == [(1, 3, 64, 96)]


def test_run_writes_masks_overlays_and_foreground_fractions(tmp_path: Path) -> None:
    left_red = np.zeros((40, 80, 3), np.uint8)
    left_red[:, :20, 0] = 255  # a quarter of the pixels are foreground
    write(tmp_path / "in" / "a.png", left_red)
    write(tmp_path / "in" / "sub" / "b.png", np.zeros((50, 50, 3), np.uint8))
    predictor = SegmentationPredictor(RedBackend(train_size=(32, 32)))
    summary = predictor.run([tmp_path / "in"], tmp_path / "out", progress=False)
    rows = {r["item_id"]: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert set(rows) == {"a.png", "sub/b.png"}
    assert float(rows["a.png"]["foreground_fraction"]) == 0.25 and rows["a.png"]["mode"] == "tile"
    assert float(rows["sub/b.png"]["foreground_fraction"]) == 0.0
    mask = cv2.imread(str(tmp_path / "out" / rows["a.png"]["mask"]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (40, 80) and set(np.unique(mask)) == {0, 255} and (mask[:, :20] == 255).all()
    over = cv2.imread(str(tmp_path / "out" / "pictures" / "overlays" / "sub" / "b.png"))
    assert over.shape == (50, 50, 3)
    assert summary["images"] == 2 and summary["images_with_foreground"] == 1
    assert summary["mean_foreground_fraction"] == 0.125 and summary["tiled_images"] == 2
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["threshold"] == 0.5


def test_threshold_option_overrides_the_runs() -> None:
    rgb = np.full((8, 8, 3), 128, np.uint8)  # probability 0.502
    assert SegmentationPredictor(RedBackend()).segment(rgb)["foreground_fraction"] == 1.0
    assert SegmentationPredictor(RedBackend(), {"threshold": "0.6"}).segment(rgb)["foreground_fraction"] == 0.0


@pytest.mark.parametrize("options", [{"large": "crop"}, {"overlap": "1.5"}, {"threshold": "2"}, {"threshold": "x"},
                                     {"batch": "0"}, {"tile": "64"}])
def test_bad_options_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        SegmentationPredictor(RedBackend(), options)


def test_discover_names_items_and_pictures(tmp_path: Path) -> None:
    write(tmp_path / "x" / "a.png", image(8, 8))
    write(tmp_path / "x" / "a.jpg", image(8, 8))
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    predictor = SegmentationPredictor(RedBackend())
    items = predictor.discover([tmp_path / "x"])
    assert [(i, n) for _, i, n in items] == [("a.jpg", "a_jpg"), ("a.png", "a_png")]
    with pytest.raises(DataError, match="not an image"):
        predictor.discover([tmp_path / "x" / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images under"):
        predictor.discover([tmp_path / "empty"])


def test_predict_bytes_answers_the_fraction_and_the_mask(tmp_path: Path) -> None:
    rgb = np.zeros((30, 70, 3), np.uint8)
    rgb[:15, :, 0] = 255
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    answer = SegmentationPredictor(RedBackend()).predict_bytes(data.tobytes(), "upload.jpg")
    assert (answer["width"], answer["height"], answer["foreground_fraction"]) == (70, 30, 0.5)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(answer["mask_png_base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (30, 70) and (mask[:15] == 255).all() and (mask[15:] == 0).all()
    json.dumps(answer)  # the service sends it as JSON
    with pytest.raises(DataError, match="upload.png"):
        SegmentationPredictor(RedBackend()).predict_bytes(b"not an image", "upload.png")


def test_large_auto_resizes_for_runs_trained_on_resized_images_and_tiles_otherwise() -> None:
    resized = RedBackend()
    resized.meta["extras"] = {"resized_to": 32}
    assert SegmentationPredictor(resized).options["large"] == "resize"
    assert SegmentationPredictor(RedBackend()).options["large"] == "tile"
    assert SegmentationPredictor(resized, {"large": "tile"}).options["large"] == "tile"
