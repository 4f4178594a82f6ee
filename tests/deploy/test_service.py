"""The service for any task's bundle: metadata, health, and each refusal as its own test, on a fake model
(the checks come before the model, so they do not depend on one); one real request per task at the end."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from datamodules.video import write_mp4
from deploy.service import create_app, main
from deploy.uploads import Limits
from suite.errors import DataError

SHA = "ab" * 32


class FakeBackend:
    name = "fake"
    hashes = {"model": SHA}

    def __init__(self, task: str = "segmentation"):
        self.meta: dict[str, Any] = {
            "format": 1, "task": task,
            "heads": [{"name": "mask", "classes": ["background", "foreground"], "positive": "foreground"}],
            "input": {"kind": "image", "shape": [3, None, None], "mean": None, "std": None},
            "graphs": {"model": {"file": "model.onnx", "input": "input", "outputs": ["scores"],
                                 "input_shape": [None, 3, None, None]}},
            "options": {"threshold": 0.5},
        }


class FakePredictor:
    """Decodes what it gets (an image: its size; a video: its byte count); waits on ``release`` if given,
    so a test can hold predictions in flight."""

    task = "segmentation"

    def __init__(self, release: threading.Event | None = None):
        self.options = {"threshold": 0.5}
        self.release = release
        self.calls = 0

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        self.calls += 1
        if self.release is not None:
            assert self.release.wait(10), "the test never released the prediction"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{filename}: the image does not decode")
        return {"height": image.shape[0], "width": image.shape[1]}


def _png(size: tuple[int, int] = (40, 50), seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of one colour: about 48 KB for 20000×20000 pixels, which decode to 1.2 GB of BGR."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + the row's bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


def _mp4(tmp_path: Path, seconds: float, fps: int = 10, size: tuple[int, int] = (48, 64)) -> bytes:
    frames = np.random.default_rng(0).integers(0, 255, (round(seconds * fps), *size, 3), dtype=np.uint8)
    return write_mp4(tmp_path / "clip.mp4", frames, fps).read_bytes()


def _client(task: str = "segmentation", **limits: Any) -> TestClient:
    predictor = FakePredictor()
    predictor.task = task
    return TestClient(create_app(FakeBackend(task), Limits(**limits), predictor=predictor))


@pytest.fixture(scope="module")
def client() -> TestClient:
    return _client(max_bytes=50_000, max_pixels=1_000_000)


# -- answers ------------------------------------------------------------------------------------------


def test_predict_returns_the_predictor_answer(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("cells.png", _png((40, 50)), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["height"], body["width"]) == (40, 50) and body["inference_ms"] >= 0


def test_untyped_upload_is_taken_by_its_extension(client: TestClient) -> None:
    # curl -F sends application/octet-stream for files it has no type for
    response = client.post("/predict", files={"file": ("cells.png", _png(), "application/octet-stream")})
    assert response.status_code == 200, response.text


def test_metadata_names_task_classes_input_limits_and_model_hash(client: TestClient) -> None:
    body = client.get("/metadata").json()
    assert body["task"] == "segmentation" and body["format"] == 1
    assert body["heads"][0]["classes"] == ["background", "foreground"]
    assert body["input"]["kind"] == "image" and body["graphs"]["model"]["input_shape"] == [None, 3, None, None]
    assert body["model"] == {"backend": "fake", "sha256": {"model": SHA}}
    assert body["uploads"]["image"]["max_bytes"] == 50_000 and "image/png" in body["uploads"]["image"]["content_types"]
    assert body["limits"]["max_pixels"] == 1_000_000
    assert body["options"] == {"threshold": 0.5} and body["bundle_options"] == {"threshold": 0.5}


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body == {"status": "ok", "task": "segmentation", "backend": "fake", "in_flight": 0, "waiting": 0,
                    "capacity": Limits().max_in_flight + Limits().max_queue}


# -- refusals -----------------------------------------------------------------------------------------


def test_text_file_is_refused_with_415(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
    assert response.status_code == 415
    assert "unsupported content type 'text/plain'" in response.json()["detail"]


def test_video_sent_to_an_image_task_is_refused_with_415(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/predict", files={"file": ("clip.mp4", _mp4(tmp_path, 0.5), "video/mp4")})
    assert response.status_code == 415 and "upload an image (image/jpeg" in response.json()["detail"]


def test_undecodable_image_is_refused_with_400(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("fake.jpg", b"hello, not an image", "image/jpeg")})
    assert response.status_code == 400
    assert "fake.jpg: not a decodable image" in response.json()["detail"]


def test_empty_upload_is_refused_with_400(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert response.status_code == 400 and "empty upload" in response.json()["detail"]


def test_predictor_user_error_is_a_400_not_a_500(client: TestClient) -> None:
    # a PNG header over a broken body: the header check passes, the decoder fails, the predictor says so
    broken = _png()[:60]
    response = client.post("/predict", files={"file": ("broken.png", broken, "image/png")})
    assert response.status_code == 400
    assert "broken.png: the image does not decode" in response.json()["detail"]


def test_predictor_crash_is_a_500_without_a_traceback() -> None:
    class CrashingPredictor(FakePredictor):
        def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
            raise RuntimeError("shape mismatch in layer 3")

    client = TestClient(create_app(FakeBackend(), predictor=CrashingPredictor()))
    response = client.post("/predict", files={"file": ("a.png", _png(), "image/png")})
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "internal error (RuntimeError) predicting a.png" in detail and "Traceback" not in detail
    assert client.get("/health").json()["in_flight"] == 0  # the slot was given back


def test_oversize_upload_is_refused_with_413(client: TestClient) -> None:
    big = _png((140, 140))
    assert 50_000 < len(big) < 50_000 + 64 * 1024  # under the Content-Length pre-check: read, then refused
    response = client.post("/predict", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert "larger than the 50000 byte limit" in response.json()["detail"]


def test_oversize_content_length_is_refused_before_reading(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("big.png", b"\0" * 200_000, "image/png")})
    assert response.status_code == 413 and "50000 byte limit" in response.json()["detail"]


def test_chunked_upload_without_length_is_capped(client: TestClient) -> None:
    request = client.build_request("POST", "/predict", files={"file": ("big.png", b"\0" * 200_000, "image/png")})
    body = request.read()

    def chunks() -> Any:  # no Content-Length: the body is streamed in chunks
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    response = client.post("/predict", content=chunks(), headers={"content-type": request.headers["content-type"]})
    assert response.status_code == 413 and "50000 byte limit" in response.json()["detail"]


def test_huge_dimensions_are_refused_from_the_header() -> None:
    png = _huge_png(20000, 20000)
    assert len(png) < 50_000  # a small file ...
    predictor = FakePredictor()
    client = TestClient(create_app(FakeBackend(), Limits(max_bytes=50_000), predictor=predictor))
    response = client.post("/predict", files={"file": ("bomb.png", png, "image/png")})
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "20000×20000" in detail and f"{Limits().max_pixels} pixel limit" in detail
    assert predictor.calls == 0  # ... never decoded


def test_image_over_the_pixel_limit_is_refused_with_413(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("wide.png", _huge_png(2000, 1000), "image/png")})
    assert response.status_code == 413
    assert "wide.png: the image is 2000×1000 pixels (2000000), more than the 1000000 pixel limit" in \
        response.json()["detail"]


def test_missing_file_field_is_a_422(client: TestClient) -> None:
    assert client.post("/predict").status_code == 422
    response = client.post("/predict", files={"image": ("a.png", _png(), "image/png")})
    assert response.status_code == 422 and "field 'file'" in response.json()["detail"]


def test_full_queue_is_refused_with_503_and_health_still_answers() -> None:
    release = threading.Event()
    predictor = FakePredictor(release)
    app = create_app(FakeBackend(), Limits(max_in_flight=1, max_queue=1, retry_after_s=3), predictor=predictor)

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response], dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            async def post(i: int) -> httpx.Response:
                return await http.post("/predict", files={"file": (f"{i}.png", _png(seed=i), "image/png")})

            tasks = [asyncio.create_task(post(i)) for i in range(4)]
            done, pending = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            while len(done) < 2:  # the two beyond one running + one waiting are refused at once
                more, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                assert more, "refusals did not come while predictions were held"
                done |= more
            health = (await http.get("/health")).json()  # the event loop is not blocked by the model
            release.set()
            rest = await asyncio.gather(*pending)
            return [t.result() for t in done], list(rest), health

    refused, served, health = asyncio.run(scenario())
    assert [r.status_code for r in refused] == [503, 503]
    assert refused[0].headers["retry-after"] == "3" and "busy" in refused[0].json()["detail"]
    assert [r.status_code for r in served] == [200, 200]
    assert health["in_flight"] == 1 and health["waiting"] == 1
    assert predictor.calls == 2


# -- videos -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_client() -> TestClient:
    class VideoPredictor:
        task, options = "violence", {}

        def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
            return {"bytes": len(data)}

    return TestClient(create_app(FakeBackend("violence"), Limits(max_video_seconds=1.5, max_video_bytes=200_000),
                                 predictor=VideoPredictor()))


def test_video_is_accepted_by_a_video_task(video_client: TestClient, tmp_path: Path) -> None:
    clip = _mp4(tmp_path, 1.0)
    response = video_client.post("/predict", files={"file": ("clip.mp4", clip, "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(clip)


def test_too_long_video_is_refused_with_413(video_client: TestClient, tmp_path: Path) -> None:
    response = video_client.post("/predict", files={"file": ("long.mp4", _mp4(tmp_path, 3.0), "video/mp4")})
    assert response.status_code == 413
    assert "lasts 3.0 s, more than the 1.5 s limit" in response.json()["detail"]


def test_undecodable_video_is_refused_with_400(video_client: TestClient) -> None:
    response = video_client.post("/predict", files={"file": ("clip.mp4", b"not a video at all" * 50, "video/mp4")})
    assert response.status_code == 400 and "clip.mp4: not a decodable video" in response.json()["detail"]


def test_image_sent_to_a_video_task_is_refused_with_415(video_client: TestClient) -> None:
    response = video_client.post("/predict", files={"file": ("a.png", _png(), "image/png")})
    assert response.status_code == 415 and "upload a video" in response.json()["detail"]


def test_oversize_video_is_refused_with_413(tmp_path: Path) -> None:
    clip = _mp4(tmp_path, 1.0)
    client = TestClient(create_app(FakeBackend("violence"), Limits(max_video_bytes=len(clip) - 1),
                                   predictor=FakePredictor()))
    response = client.post("/predict", files={"file": ("big.mp4", clip, "video/mp4")})
    assert response.status_code == 413 and f"{len(clip) - 1} byte limit" in response.json()["detail"]


def test_video_without_extension_reaches_the_predictor_named_by_its_type(tmp_path: Path) -> None:
    seen: list[str] = []

    class NamePredictor:
        task, options = "behavior", {}

        def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
            seen.append(filename)  # the video predictors pick their reader by extension
            return {}

    client = TestClient(create_app(FakeBackend("behavior"), predictor=NamePredictor()))
    response = client.post("/predict", files={"file": ("camera-7", _mp4(tmp_path, 0.5), "video/quicktime")})
    assert response.status_code == 200, response.text
    assert seen == ["camera-7.mov"]


# -- relevance events: a .zip of frames or a short video ------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def event_client() -> TestClient:
    class EventPredictor:
        task, options = "relevance", {}

        def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
            return {"frames": len(zipfile.ZipFile(io.BytesIO(data)).namelist())}

    return TestClient(create_app(FakeBackend("relevance"), Limits(max_archive_frames=4, max_total_pixels=100_000,
                                                                  max_pixels=40_000), predictor=EventPredictor()))


def test_zip_of_frames_is_accepted_by_relevance(event_client: TestClient) -> None:
    event = _zip({f"event/{i:03d}.png": _png((40, 50), seed=i) for i in range(3)})
    response = event_client.post("/predict", files={"file": ("event.zip", event, "application/zip")})
    assert response.status_code == 200, response.text
    assert response.json()["frames"] == 3


def test_zip_with_too_many_frames_is_refused_with_413(event_client: TestClient) -> None:
    event = _zip({f"{i:03d}.png": _png((8, 8), seed=i) for i in range(5)})
    response = event_client.post("/predict", files={"file": ("event.zip", event, "application/zip")})
    assert response.status_code == 413 and "5 images, more than the 4 image limit" in response.json()["detail"]


def test_zip_with_a_huge_frame_is_refused_with_413_from_its_header(event_client: TestClient) -> None:
    event = _zip({"000.png": _png((8, 8)), "001.png": _huge_png(20000, 20000)})
    assert len(event) < 60_000
    response = event_client.post("/predict", files={"file": ("event.zip", event, "application/zip")})
    assert response.status_code == 413
    assert "event.zip: 001.png: the image is 20000×20000 pixels" in response.json()["detail"]


def test_zip_whose_frames_hold_too_many_pixels_together_is_refused_with_413(event_client: TestClient) -> None:
    event = _zip({f"{i:03d}.png": _png((150, 200), seed=i) for i in range(4)})  # 4 × 30 000 pixels
    response = event_client.post("/predict", files={"file": ("event.zip", event, "application/zip")})
    assert response.status_code == 413 and "100000 pixel limit of an upload" in response.json()["detail"]


def test_text_sent_as_a_zip_is_refused_with_400(event_client: TestClient) -> None:
    response = event_client.post("/predict", files={"file": ("event.zip", b"not a zip" * 10, "application/zip")})
    assert response.status_code == 400 and "event.zip: not a zip archive" in response.json()["detail"]


def test_relevance_video_is_limited_by_the_pixels_it_decodes(event_client: TestClient, tmp_path: Path) -> None:
    clip = _mp4(tmp_path, 3.0, fps=10, size=(96, 128))  # 30 frames × 12 288 pixels
    response = event_client.post("/predict", files={"file": ("event.mp4", clip, "video/mp4")})
    assert response.status_code == 413 and "100000 pixel limit of an upload" in response.json()["detail"]


def test_the_service_imports_no_torch() -> None:
    """The ONNX path runs on a Raspberry Pi without torch: the service's modules must not pull it in."""
    import subprocess
    import sys

    code = ("import sys, deploy.service, deploy.uploads, deploy.backends; "
            "sys.exit(sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules) or 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("layout", "expected"), [
    ((), "is not a bundle: preprocessing.json is missing"),
    (("checkpoints/best.ckpt",), "is a training run, not a bundle"),
    (("config/preprocessing.json", "models/lego_classifier.onnx"), "LEGO Raspberry Pi bundle"),
])
def test_a_folder_that_is_not_a_bundle_exits_2_saying_what_a_bundle_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: tuple[str, ...], expected: str) -> None:
    for rel in layout:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["--bundle", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "a bundle is the folder an export writes" in err



# -- one real request per task: a tiny trained run, its exported bundle, the task's predictor ------------

TASK_RUNS: dict[str, list[str]] = {
    "segmentation": ["experiment=segmentation", "data.synthetic_images=12", "data.synthetic_size=32"],
    "lego": ["experiment=lego_multitask", "data.image_size=32", "data.batch_size=16"],
    "behavior": ["experiment=intravideo"],
    "violence": ["experiment=violence_optimal"],
    "relevance": ["experiment=relevance_segmentation"],
}


def _moving_square_frames(count: int = 4, size: int = 64) -> list[np.ndarray]:
    frames = []
    for i in range(count):
        frame = np.full((size, size, 3), 40, np.uint8)
        frame[20:36, 8 + 8 * i:24 + 8 * i] = 230
        frames.append(frame)
    return frames


def _task_upload(task: str, tmp_path: Path) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) of one input of the task's kind."""
    if task in ("segmentation", "lego"):
        return "sample.png", _png((48, 48)), "image/png"
    if task == "relevance":
        frames = {f"event/{i:03d}.png": cv2.imencode(".png", f)[1].tobytes()
                  for i, f in enumerate(_moving_square_frames())}
        return "event.zip", _zip(frames), "application/zip"
    frames = np.stack(_moving_square_frames(24))
    return "clip.mp4", write_mp4(tmp_path / "clip.mp4", frames, 8).read_bytes(), "video/mp4"


@pytest.fixture(scope="module")
def task_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Any:
    """``bundle(task)``: the export/ folder of a tiny trained run of the task (trained once per module)."""

    from deploy.backends import is_bundle
    from suite.exporting import export_run
    from tests.conf.test_experiments import FAST
    from tests.conftest import train_run

    made: dict[str, Path] = {}

    def bundle(task: str) -> Path:
        if task not in made:
            run_dir = tmp_path_factory.mktemp(f"service_{task}") / "run"
            train_run([*TASK_RUNS[task], *FAST], run_dir, shared_data_dir)
            if not is_bundle(run_dir / "export"):  # the run's export callback is off or failed: export now
                export_run(run_dir, latency_runs=0)
            made[task] = run_dir / "export"
        return made[task]

    return bundle


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASK_RUNS))
def test_one_real_request_per_task(task: str, task_bundle: Any, tmp_path: Path) -> None:
    from deploy.backends import OnnxBackend, file_sha256
    from deploy.predictors import predictor_for

    bundle = task_bundle(task)
    client = TestClient(create_app(bundle))
    metadata = client.get("/metadata").json()
    assert metadata["task"] == task and metadata["model"]["backend"] == "onnx"
    assert metadata["graphs"] and set(metadata["model"]["sha256"]) == set(metadata["graphs"])
    for graph in metadata["graphs"]:
        assert metadata["model"]["sha256"][graph] == file_sha256(bundle / f"{graph}.onnx"), graph
    name, data, content_type = _task_upload(task, tmp_path)
    response = client.post("/predict", files={"file": (name, data, content_type)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer.pop("inference_ms") >= 0 and answer
    # the service answers what the task's predictor answers on the same bundle
    direct = predictor_for(OnnxBackend(bundle)).predict_bytes(data, name)
    assert answer == json.loads(json.dumps(direct))
