"""Violence predictor: frames sampled as the feature cache samples them, TTA windows, labels from class folders.

A numpy backend stands in for the graphs: a frame's feature is its brightness, a window's violent
probability the mean brightness of its frames, so every expected figure is known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.video import write_mp4
from deploy.predictors.violence import ViolencePredictor
from suite.errors import ConfigError, DataError

SIZE = 16


class BrightnessBackend:
    name = "numpy"
    hashes: dict[str, str] = {}

    def __init__(self, num_frames: int = 10, clip_len: int = 6, tta_crops: int = 3):
        self.windows: list[np.ndarray] = []
        self.meta = {
            "task": "violence", "heads": [{"name": "class", "classes": ["non_violent", "violent"], "positive": 1}],
            "extras": {"folders": {"fight": "violent", "nofight": "non_violent"}},
            "graphs": {"frame_encoder": {"input": "frames", "outputs": ["features"],
                                         "input_shape": [None, 3, SIZE, SIZE]},
                       "sequence_model": {"input": "features", "outputs": ["scores"],
                                          "input_shape": [None, clip_len, 4]}},
            "options": {"num_frames": num_frames, "clip_len": clip_len, "tta_crops": tta_crops, "aggregation": "mean",
                        "threshold": 0.5, "frame_size": SIZE, "feature_dim": 4, "feature_dtype": "float16",
                        "positive": 1},
        }

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        if graph == "frame_encoder":
            assert array.shape[1:] == (3, SIZE, SIZE), array.shape
            value = array.mean(axis=(1, 2, 3)) / 255.0
            return {"features": np.repeat(value[:, None], 4, axis=1).astype(np.float32)}
        assert graph == "sequence_model" and array.shape[1:] == (6, 4), array.shape
        self.windows.append(array)
        p = array[:, :, 0].mean(axis=1)
        return {"scores": np.stack([1 - p, p], axis=1)}


def clip(path: Path, values: list[int], fps: int = 10) -> Path:
    """A clip whose frame ``i`` has the grey level ``values[i]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in values])
    return write_mp4(path, frames, fps, crf=0)


def test_class_folders_give_labels_and_tta_is_the_mean_of_the_windows(tmp_path: Path) -> None:
    clip(tmp_path / "clips" / "fight" / "a.mp4", [250] * 20)
    clip(tmp_path / "clips" / "nofight" / "b.mp4", [5] * 20)
    # bright first half: the early TTA window sees more of it than the centre window
    clip(tmp_path / "clips" / "other" / "c.mp4", [250] * 10 + [5] * 10)
    backend = BrightnessBackend()
    summary = ViolencePredictor(backend).run([tmp_path / "clips"], tmp_path / "out", progress=False)
    rows = {Path(r["item_id"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert (rows["a.mp4"]["label"], rows["a.mp4"]["pred"]) == ("violent", "violent")
    assert (rows["b.mp4"]["label"], rows["b.mp4"]["pred"]) == ("non_violent", "non_violent")
    assert rows["c.mp4"]["label"] == ""
    assert float(rows["a.mp4"]["score_violent"]) > 0.95 and float(rows["b.mp4"]["score_violent"]) < 0.05
    # c: 10 of 20 frames bright; sampled features: 5 bright then 5 dark; windows of 6 start at 0, 2, 4, centre 2
    p_windows = np.array([5 / 6, 3 / 6, 1 / 6]) * 250 / 255 + np.array([1 / 6, 3 / 6, 5 / 6]) * 5 / 255
    assert float(rows["c.mp4"]["score_violent"]) == pytest.approx(p_windows.mean(), abs=0.02)
    assert float(rows["c.mp4"]["prob_violent_centre"]) == pytest.approx(p_windows[1], abs=0.02)
    assert all(len(w) == 3 + 1 for w in backend.windows)  # the TTA windows and the centre one, one call
    assert summary["labelled_clips"] == 2 and summary["accuracy"] == 1.0 and summary["violent_clips"] == 1


def test_short_clips_repeat_frames_and_threshold_option(tmp_path: Path) -> None:
    video = clip(tmp_path / "short.mp4", [150] * 4)  # fewer frames than num_frames
    predictor = ViolencePredictor(BrightnessBackend(), {"threshold": "0.7"})
    row = predictor.predict_item(video).rows[0]
    assert row.scores["violent"] == pytest.approx(150 / 255, abs=0.02) and row.pred == "non_violent"
    with pytest.raises(ConfigError, match="threshold"):
        ViolencePredictor(BrightnessBackend(), {"threshold": "2"})


def test_predict_bytes_and_bad_inputs(tmp_path: Path) -> None:
    video = clip(tmp_path / "x.mp4", [240] * 12)
    predictor = ViolencePredictor(BrightnessBackend())
    answer = predictor.predict_bytes(video.read_bytes(), "x.mp4")
    json.dumps(answer)
    assert answer["pred"] == "violent" and answer["scores"]["violent"] > 0.9
    with pytest.raises(DataError, match="not a video"):
        predictor.predict_bytes(b"abc", "x.txt")
    with pytest.raises(DataError):
        predictor.predict_bytes(b"\x00" * 64, "x.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a video"):
        predictor.discover([tmp_path / "notes.txt"])


# -- a tiny trained run (slow: it trains; run with -m slow) -----------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.deploy.predictors.conftest import train_tiny_run

    base = tmp_path_factory.mktemp("violence_run")
    return train_tiny_run(["experiment=violence_optimal", f"paths.cache_dir={base / 'cache'}"], base)


def _data_root(run: Path) -> Path:
    return next(p for p in (run.parent / "data" / "synthetic").glob("violence-*") if p.is_dir())


@pytest.mark.slow
def test_frame_encoder_graph_is_rebuilt_from_the_checkpoint(trained_run: Path) -> None:
    """The frame encoder graph (rebuilt from the spec's description) gives the features the data extracted."""
    import torch

    from lightning_modules.nets.violence import FrameEncoder
    from suite.inference import load_trained_module

    module, _, _ = load_trained_module(trained_run)
    encoder_graph, sequence_graph = module.export_graphs()
    described = module.spec.extras["frame_encoder"]
    size = described["frame_size"]
    frames = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    reference = FrameEncoder(**{k: described[k] for k in ("backbone", "pretrained", "frame_size", "feature_dim",
                                                          "projection", "seed")}).load("cpu")(frames)
    with torch.inference_mode():
        got = encoder_graph.network(torch.from_numpy(frames).permute(0, 3, 1, 2).float()).numpy()
        probs = sequence_graph.network(sequence_graph.example).numpy()
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    options = module.inference_options()
    assert (options["num_frames"], options["clip_len"], options["tta_crops"]) == (30, 24, 5)


@pytest.mark.slow
def test_tta_probability_is_the_runs(trained_run: Path, tmp_path: Path) -> None:
    """predict.py from the checkpoint on the run's test videos gives the TTA probability its test wrote."""
    import pandas as pd

    from predict import predict

    test = pd.read_csv(trained_run / "predictions_agg.csv")
    root = _data_root(trained_run)
    videos = [str(root / item) for item in test["item_id"]]
    out = tmp_path / "predict"
    summary = predict([str(trained_run), *videos, "--out", str(out), "--no-progress"])
    got = pd.read_csv(out / "predictions.csv").set_index("item_id")
    assert summary["items"] == len(test) and summary["backend"] == "torch"
    for row in test.itertuples():
        assert got.loc[str(root / row.item_id), "score_violent"] == pytest.approx(row.prob_violent_tta, abs=2e-3)
        assert got.loc[str(root / row.item_id), "label"] == row.label


@pytest.mark.slow
def test_checkpoint_and_bundle_agree(trained_run: Path, tmp_path: Path) -> None:
    exporting = pytest.importorskip("suite.exporting")
    from deploy.backends import OnnxBackend, TorchBackend

    parity = exporting.export_run(trained_run, out=tmp_path / "bundle", latency_runs=2)
    assert parity["passed"], parity
    videos = sorted((_data_root(trained_run) / "test").rglob("*.mp4"))[:6]
    from_checkpoint = ViolencePredictor(TorchBackend(trained_run, threads=1))
    from_bundle = ViolencePredictor(OnnxBackend(Path(parity["bundle"]), threads=1))
    torch_p = [from_checkpoint.probabilities(v)[0] for v in videos]
    onnx_p = [from_bundle.probabilities(v)[0] for v in videos]
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
