"""Relevance predictor: inputs (event folders, sequences, zip, video), the rule, pictures, the service's
answer, the export hooks, and a tiny trained run served through its checkpoint (and its bundle).

A numpy backend stands in for the graph in the fast tests: a pixel's relevance is 1 where it is red and
0.1 elsewhere, so a moving red square must alert and a moving blue one must not.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from datamodules.video import write_mp4
from deploy.predictors.relevance import EventResult, RelevancePredictor
from deploy.relevance_rule import resize_relevance, sample_frames
from suite.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[3]
SIZE = 32


class RedBackend:
    """Relevance = 1 on red pixels, 0.1 elsewhere (the graph's layout: raw RGB in, [N, 1, S, S] out)."""

    name = "numpy"
    hashes: dict[str, str] = {}

    def __init__(self, event_frames: int = 6, region_threshold: float = 0.5):
        self.calls: list[tuple[int, ...]] = []
        self.meta = {
            "task": "relevance", "heads": [{"name": "mask", "classes": ["irrelevant", "relevant"], "positive": 1}],
            "graphs": {"model": {"input": "input", "outputs": ["relevance"], "input_shape": [None, 3, SIZE, SIZE]}},
            "options": {"image_size": SIZE, "region_threshold": region_threshold, "eval_frames": 3,
                        "event_frames": event_frames, "motion": {"max_side": None, "min_area_fraction": 0.001}},
        }

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        assert graph == "model" and array.shape[1:] == (3, SIZE, SIZE) and array.dtype == np.float32
        self.calls.append(array.shape)
        red = (array[:, 0] > 150) & (array[:, 1] < 100) & (array[:, 2] < 100)
        return {"relevance": np.where(red, 1.0, 0.1)[:, None].astype(np.float32)}


def square_frames(color: tuple[int, int, int], count: int = 6, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A grey scene with a 12 px square of ``color`` moving left to right."""
    frames = np.full((count, *size, 3), 110, np.uint8)
    for i in range(count):
        x = 4 + 7 * i
        frames[i, 18:30, x:x + 12] = color
    return frames


def write_event(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


RED, BLUE = (230, 20, 20), (20, 20, 230)


@pytest.fixture
def events_root(tmp_path: Path) -> Path:
    root = tmp_path / "events"
    write_event(root / "cam0" / "intruder", square_frames(RED))
    write_event(root / "cam0" / "shadow", square_frames(BLUE))
    write_event(root / "cam1" / "intruder", square_frames(RED))
    (root / "_truth").mkdir()  # not a camera
    (root / "labels.csv").write_text("event_id,relevant\ncam0/intruder,1\ncam0/shadow,0\n")
    return root


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="") as fh:
        return {r["item_id"]: r for r in csv.DictReader(fh)}


def test_event_folders_give_regions_scores_alerts_labels_and_pictures(events_root: Path, tmp_path: Path) -> None:
    summary = RelevancePredictor(RedBackend()).run([events_root], tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    assert set(rows) == {"cam0/intruder", "cam0/shadow", "cam1/intruder"}
    intruder, shadow = rows["cam0/intruder"], rows["cam0/shadow"]
    assert (intruder["label"], intruder["pred"], intruder["alert"]) == ("relevant", "relevant", "1")
    assert (shadow["label"], shadow["pred"], shadow["alert"]) == ("irrelevant", "irrelevant", "0")
    assert rows["cam1/intruder"]["label"] == "" and rows["cam1/intruder"]["group"] == "cam1"
    for row in (intruder, shadow):
        assert int(row["num_regions"]) >= 1 and row["frames"] == "6"
        assert len(row["region_scores"].split(";")) == int(row["num_regions"])
        assert len(row["region_boxes"].split(";")) == int(row["num_regions"])
    assert int(intruder["num_relevant"]) >= 1 and shadow["num_relevant"] == "0"
    # the event's score is its highest region's
    assert float(intruder["score_relevant"]) == pytest.approx(max(map(float, intruder["region_scores"].split(";"))),
                                                              abs=1e-3)
    assert float(shadow["score_relevant"]) < 0.5
    pictures = sorted(p.name for p in (tmp_path / "out" / "pictures").iterdir())
    assert pictures == ["cam0__intruder.png", "cam0__shadow.png", "cam1__intruder.png"]
    picture = cv2.imread(str(tmp_path / "out" / "pictures" / "cam0__intruder.png"))
    assert picture.shape[1] > 2 * 64  # motion detection | relevance, side by side
    assert summary["events"] == 3 and summary["alerts"] == 2 and summary["labelled_events"] == 2
    assert summary["alert_accuracy"] == 1.0 and summary["relevant_regions"] >= 2


def test_one_event_folder_and_the_seed_usage(events_root: Path) -> None:
    predictor = RelevancePredictor(RedBackend())
    [event] = predictor.discover([events_root / "cam0" / "intruder"])
    assert event.event_id == "cam0/intruder" and len(event.frames) == 6
    # a camera folder: its events keep the camera in their ids
    assert [e.event_id for e in predictor.discover([events_root / "cam0"])] == ["cam0/intruder", "cam0/shadow"]
    frames = predictor.read_event(event)
    motion = predictor.detector.detect(frames)
    result = predictor.predict(frames, motion)
    assert isinstance(result, EventResult) and result.num_relevant > 0 and result.alert
    assert result.num_regions == len(motion.regions) and all(0 <= r["score"] <= 1 for r in result.regions)
    json.dumps(result.to_dict())  # JSON-able
    # three frames are sampled (with the middle one), in one call
    assert predictor.backend.calls == [(len(sample_frames(6, 3)), 3, SIZE, SIZE)]


def test_a_long_sequence_is_cut_into_events_with_the_sequence_background(tmp_path: Path) -> None:
    frames = np.concatenate([square_frames(RED, 6), square_frames(BLUE, 6), np.full((5, 48, 64, 3), 110, np.uint8)])
    write_event(tmp_path / "cam7" / "input", frames)
    predictor = RelevancePredictor(RedBackend(event_frames=6))
    events = predictor.discover([tmp_path / "cam7"])
    assert [e.event_id for e in events] == ["cam7/input@000000", "cam7/input@000006", "cam7/input@000012"]
    assert [len(e.frames) for e in events] == [6, 6, 5] and all(len(e.sequence) == 17 for e in events)
    # a flat folder of frames only with sequence=true; event_frames from the options
    flat = write_event(tmp_path / "flat", frames[:12])
    assert len(RelevancePredictor(RedBackend()).discover([flat])) == 1
    cut = RelevancePredictor(RedBackend(), {"sequence": "true", "event_frames": "4"}).discover([flat])
    assert [e.event_id for e in cut] == [f"{tmp_path.name}/flat@{s:06d}" for s in (0, 4, 8)]
    predictor.run([tmp_path / "cam7"], tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out")
    assert [rows[e.event_id]["alert"] for e in events] == ["1", "0", "0"]
    assert rows["cam7/input@000012"]["num_regions"] == "0"  # nothing moves against the sequence's background


def test_zip_and_video_events_and_the_service_answer(tmp_path: Path) -> None:
    predictor = RelevancePredictor(RedBackend())
    frames = square_frames(RED)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, frame in enumerate(frames):
            archive.writestr(f"event/{i:03d}.png", cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1])
        archive.writestr("event/notes.txt", "not a frame")
    answer = predictor.predict_bytes(buffer.getvalue(), "event.zip")
    assert answer["frames"] == 6 and answer["alert"] and answer["pred"] == "relevant" and answer["num_relevant"] >= 1
    assert {"regions", "num_regions", "event_score", "region_threshold"} <= set(answer)
    json.dumps(answer)
    video = write_mp4(tmp_path / "clip.mp4", square_frames(BLUE, 10), fps=5, crf=0)
    quiet = predictor.predict_bytes(video.read_bytes(), "event.mp4")
    assert quiet["frames"] == 10 and not quiet["alert"] and quiet["pred"] == "irrelevant"
    thinned = RelevancePredictor(RedBackend(), {"max_frames": 4}).predict_bytes(video.read_bytes(), "event.mp4")
    assert thinned["frames"] == 4
    # the same files as predict.py inputs
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "event.zip").write_bytes(buffer.getvalue())
    events = predictor.discover([tmp_path / "in" / "event.zip", video])
    assert [(e.event_id, e.archive) for e in events] == [("event", tmp_path / "in" / "event.zip"), ("clip", video)]
    png = cv2.imencode(".png", frames[0])[1].tobytes()
    with pytest.raises(DataError, match="one image is not an event"):
        predictor.predict_bytes(png, "frame.png")
    with pytest.raises(DataError, match="at least 2"):
        one = io.BytesIO()
        with zipfile.ZipFile(one, "w") as archive:
            archive.writestr("a.png", png)
        predictor.predict_bytes(one.getvalue(), "one.zip")
    with pytest.raises(DataError, match="cannot decode"):
        predictor.predict_bytes(b"not a video at all", "x.mp4")


def test_refusals_name_the_input_or_option(tmp_path: Path) -> None:
    write_event(tmp_path / "single", square_frames(RED, 1))
    with pytest.raises(DataError, match="one frame"):
        RelevancePredictor(RedBackend()).discover([tmp_path / "single"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no events under"):
        RelevancePredictor(RedBackend()).discover([tmp_path / "empty"])
    with pytest.raises(DataError, match="one image is not an event"):
        RelevancePredictor(RedBackend()).discover([tmp_path / "single" / "0000.png"])
    with pytest.raises(ConfigError, match="unknown relevance predict option"):
        RelevancePredictor(RedBackend(), {"treshold": "0.3"})
    with pytest.raises(ConfigError, match="sequence"):
        RelevancePredictor(RedBackend(), {"sequence": "maybe"})
    assert RelevancePredictor(RedBackend(), {"pictures": "false"}).options["pictures"] is False
    strict = RelevancePredictor(RedBackend(region_threshold=0.5), {"region_threshold": "0.99"})
    frames = square_frames(RED)
    assert strict.region_threshold == 0.99
    assert not strict.predict(frames, strict.detector.detect(frames)).alert


def test_the_rule_is_the_one_of_the_run_s_test() -> None:
    from datamodules.relevance import sample_frames as training_sample_frames
    from lightning_modules.nets.relevance import resize_relevance as torch_resize

    for count in range(1, 20):
        for wanted in (1, 2, 4, 7):
            assert np.array_equal(sample_frames(count, wanted), training_sample_frames(count, wanted))
    prob = torch.rand(24, 24)
    for size in ((48, 64), (17, 9), (24, 24)):
        np.testing.assert_allclose(resize_relevance(prob.numpy(), size), torch_resize(prob, size).numpy(), atol=1e-5)


def test_export_hooks_raw_frames_in_probabilities_out() -> None:
    from datamodules.relevance import preprocess_frames
    from lightning_modules.losses import CombinedSegmentationLoss
    from lightning_modules.nets.segmentation import UNet
    from lightning_modules.relevance import RelevanceSegmentationModule
    from suite.backbones import IMAGENET_MEAN, IMAGENET_STD
    from suite.contracts import DataSpec, Head, InputSpec

    module = RelevanceSegmentationModule(net=UNet(), loss=CombinedSegmentationLoss(), optimizer=torch.optim.SGD,
                                         region_threshold=0.4)
    module.configure(DataSpec("relevance", (Head("mask", ("irrelevant", "relevant"), positive=1),),
                              InputSpec("image", (3, SIZE, SIZE), IMAGENET_MEAN, IMAGENET_STD),
                              extras={"mode": "segmentation", "eval_frames": 3, "event_frames": 8,
                                      "motion": {"threshold": 25}}))
    module.eval()
    [graph] = module.export_graphs()
    assert (graph.name, graph.output_names) == ("model", ("relevance",))
    assert tuple(graph.example.shape[1:]) == (3, SIZE, SIZE)
    frames = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    raw = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        prob = graph.network(raw)
        expected = torch.sigmoid(module(preprocess_frames(frames, SIZE)))
    assert prob.shape == (2, 1, SIZE, SIZE) and float(prob.min()) >= 0 and float(prob.max()) <= 1
    torch.testing.assert_close(prob, expected, atol=1e-5, rtol=0)
    # a test event's frames come back as raw pixels
    inputs = module.export_inputs({"frames": preprocess_frames(frames, SIZE)})
    torch.testing.assert_close(inputs["model"], raw, atol=1e-3, rtol=0)
    options = module.inference_options()
    assert options["image_size"] == SIZE and options["region_threshold"] == 0.4 and options["eval_frames"] == 3
    assert options["event_frames"] == 8 and options["motion"] == {"threshold": 25}
    json.dumps(options)


# -- a tiny trained run: checkpoint and bundle (slow: minutes of training on a loaded 2-core machine) -------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """relevance_segmentation for two batches on 32 px synthetic events, with the .hydra/config.yaml Hydra writes."""
    from tests.conftest import train_run

    run_dir = tmp_path_factory.mktemp("relevance_predict") / "run"
    overrides = ["experiment=relevance_segmentation", "debug=fast", "model.pretrained=false",
                 "trainer.accelerator=cpu", "data.image_size=32", "data.synthetic_events=4", "data.synthetic_frames=4",
                 "data.synthetic_width=64", "data.synthetic_height=48", "data.eval_frames=2", "data.batch_size=2"]
    train_run(overrides, run_dir, shared_data_dir)
    return run_dir


@pytest.fixture(scope="module")
def tiny_bundle(tiny_run: Path) -> Path:
    """The run's ONNX bundle (``<run>/export``), with parity against PyTorch on its test events."""
    from suite.exporting import export_run

    parity = export_run(tiny_run, latency_runs=0)
    assert parity["passed"], parity
    return Path(parity["bundle"])


def _test_events(run_dir: Path) -> tuple[Path, list[str]]:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    root = next(Path(cfg.paths.data_dir, "synthetic").glob("relevance-*"))
    return root, json.loads((run_dir / "splits.json").read_text())["test"]


@pytest.mark.slow
def test_checkpoint_predictions_are_the_run_s_test_decisions(tiny_run: Path, tmp_path: Path) -> None:
    """predict.py on the run's test events decides as the test of the run did (same rule, same motion)."""
    import predict

    root, test_ids = _test_events(tiny_run)
    inputs = [str(root / event_id) for event_id in test_ids]
    summary = predict.predict([str(tiny_run), *inputs, "--out", str(tmp_path / "out"), "--no-progress"])
    assert summary["backend"] == "torch" and summary["events"] == len(test_ids)
    served = _rows(tmp_path / "out")
    with open(tiny_run / "predictions_agg.csv", newline="") as fh:
        tested = {r["item_id"]: r for r in csv.DictReader(fh)}
    for event_id in test_ids:
        assert served[event_id]["pred"] == tested[event_id]["pred"]
        assert served[event_id]["region_scores"] == tested[event_id]["region_scores"]
        assert served[event_id]["num_relevant"] == tested[event_id]["relevant_regions"]


@pytest.mark.slow
def test_deploy_relevance_cli_delegates_to_the_predictor(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    from deploy.relevance import main

    root, test_ids = _test_events(tiny_run)
    event = root / test_ids[0]
    for model in (tiny_run, tiny_run / "checkpoints" / "complete.pth"):
        assert main([str(event), "--model", str(model)]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith(f"{test_ids[0]}: ") and ("ALERT" in line or "ignore" in line)
    assert main([str(event), "--model", str(tiny_run / "nothing.pth")]) == 2


@pytest.mark.slow
def test_the_documented_seed_usage_runs(tiny_run: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    """The Python snippet of docs/relevance.md, with its placeholders filled in, on the ONNX bundle."""
    text = (ROOT / "docs" / "relevance.md").read_text()
    snippet = re.search(r"<!-- seed usage -->\s*```python\n(.*?)```", text, re.S).group(1)
    root, test_ids = _test_events(tiny_run)
    code = snippet.replace("<run dir>", str(tiny_run)).replace("<event folder>", str(root / test_ids[0]))
    assert "<" not in code and f"{tiny_bundle}" in code
    exec(compile(code, "docs/relevance.md", "exec"), {})
    assert capsys.readouterr().out.strip() in ("SEND ALERT - relevant motion detected!", "Ignore - no relevant motion")


@pytest.mark.slow
def test_bundle_decides_as_the_checkpoint(tiny_run: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    """Checkpoint and bundle: the same relevance maps (to 1e-4), regions and alerts on the test events."""
    from deploy.backends import OnnxBackend, TorchBackend

    root, test_ids = _test_events(tiny_run)
    torch_predictor = RelevancePredictor(TorchBackend(tiny_run))
    onnx_predictor = RelevancePredictor(OnnxBackend(tiny_bundle))
    assert onnx_predictor.meta["options"] == torch_predictor.meta["options"]
    for event_id in test_ids:
        [event] = torch_predictor.discover([root / event_id])
        frames = torch_predictor.read_event(event)
        motion = torch_predictor.detector.detect(frames)
        a, b = torch_predictor.predict(frames, motion), onnx_predictor.predict(frames, motion)
        np.testing.assert_allclose(a.relevance, b.relevance, atol=1e-4)
        assert a.alert == b.alert and [r["relevant"] for r in a.regions] == [r["relevant"] for r in b.regions]
    import predict

    summary = predict.predict([str(tiny_bundle), str(root / test_ids[0]), "--out", str(tmp_path / "out"),
                               "--no-progress"])
    assert summary["backend"] == "onnx" and summary["events"] == 1


def test_the_onnx_path_imports_no_torch() -> None:
    """What a Raspberry Pi runs: the predictor, the rule, the pictures and the CLI module, without torch."""
    import subprocess
    import sys

    code = ("import sys; import deploy.predictors.relevance, deploy.relevance_rule, deploy.relevance_pictures, "
            "deploy.relevance; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
