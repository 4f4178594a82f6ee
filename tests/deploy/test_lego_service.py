"""The LEGO HTTP service: predictions for images, clear 4xx for text, oversize and wrong-type uploads."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from deploy.lego_service import create_app
from deploy.onnx_predictor import ClassifierLoader, ImageDecodeError, decode_image
from export import export_onnx, write_bundle
from lightning_modules.nets.lego import LegoClassifier

PARTS, COLORS = ["3001", "3003", "3022"], ["4", "14"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) classifier exported and bundled the way export.py does it."""
    out = tmp_path_factory.mktemp("service")
    torch.manual_seed(0)
    net = LegoClassifier(num_parts=len(PARTS), num_colors=len(COLORS), freeze_ratio=0.0).eval()
    export_onnx(net, out / "model.onnx", torch.rand(2, 3, 32, 32) * 255)
    config = {"model": "models/lego_classifier.onnx", "size": 32, "interpolation": "linear",
              "outputs": net.output_names}
    return write_bundle(out / "pi_bundle", out / "model.onnx", out / "model.onnx", PARTS, COLORS, config)


@pytest.fixture(scope="module")
def client(bundle: Path) -> TestClient:
    return TestClient(create_app(bundle, max_bytes=20_000))


def _png(size: tuple[int, int] = (40, 50)) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def test_predict_returns_the_seed_fields(client: TestClient, bundle: Path) -> None:
    response = client.post("/predict", files={"file": ("brick.png", _png(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["part_id"] in PARTS and body["color_id"] in COLORS
    assert 0 < body["part_confidence"] <= 1 and 0 < body["color_confidence"] <= 1
    # the same answer as the library call
    direct = ClassifierLoader(bundle).predict(_png())
    assert direct["part_id"] == body["part_id"] and direct["part_confidence"] == pytest.approx(body["part_confidence"])


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["parts"] == len(PARTS) and body["colors"] == len(COLORS)


def test_text_file_is_rejected_with_415(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert response.status_code == 415
    assert "content type" in response.json()["detail"]


def test_text_claiming_to_be_an_image_is_rejected_with_400(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("fake.jpg", b"hello, not an image", "image/jpeg")})
    assert response.status_code == 400
    assert "not a decodable image" in response.json()["detail"]


def test_oversize_upload_is_rejected_with_413(client: TestClient) -> None:
    big = _png((400, 400))
    assert len(big) > 20_000
    response = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert "20000 byte limit" in response.json()["detail"]


def test_missing_file_field_is_a_422(client: TestClient) -> None:
    assert client.post("/predict").status_code == 422


def test_decode_errors() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(b"")
    with pytest.raises(ImageDecodeError):
        decode_image(b"\x89PNG but truncated")


def test_bundle_layout(bundle: Path) -> None:
    assert json.loads((bundle / "config" / "part_names.json").read_text()) == PARTS
    assert (bundle / "models" / "lego_classifier.onnx").is_file() and (bundle / "lego_predictor.py").is_file()


def test_model_with_another_input_shape_is_refused_at_load(bundle: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "bundle"
    shutil.copytree(bundle, other)
    config = json.loads((other / "config" / "preprocessing.json").read_text())
    config["size"] = 48  # the model was exported for 32x32 inputs
    (other / "config" / "preprocessing.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lego_classifier.onnx: input 'image' has shape .*32, 32.*size 48"):
        ClassifierLoader(other)


def test_a_run_dir_given_as_bundle_exits_2_saying_what_a_pi_bundle_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.lego_service import main

    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--bundle", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is not a LEGO Pi bundle (config/preprocessing.json" in capsys.readouterr().err
