"""Behavior predictor: windows over long videos, events merged from them, flat memory, and the real graphs.

Most tests use a numpy backend whose score is a clip's brightness, on videos with a known bright
segment: what the predictor must find is then exact. The last ones run a tiny trained run's graphs.
"""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.video import probe_video, write_mp4
from deploy.predictors.behavior import BehaviorPredictor, aggregate_views, merge_events, window_starts
from lightning_modules.tta import aggregate_tta
from suite.errors import ConfigError, DataError

SIZE, FPS = 16, 8


class BrightnessBackend:
    """Scores a clip by its mean brightness (0-255 -> 0-1): bright clips are 'tail'."""

    name = "numpy"
    hashes: dict[str, str] = {}

    def __init__(self, event_s: float | None = 2.0, frames: int = 4, clips: int = 3, aggregation: str = "mean"):
        self.calls = 0
        self.meta = {
            "task": "behavior", "heads": [{"name": "label", "classes": ["normal", "tail"], "positive": 1}],
            "extras": {}, "graphs": {"model": {"input": "clips", "outputs": ["scores"],
                                               "input_shape": [None, frames, 3, SIZE, SIZE]}},
            "options": {"threshold": 0.5, "aggregation": aggregation, "clips_per_event": clips,
                        "frames_per_clip": frames, "image_size": SIZE, "target_fps": None, "event_s": event_s,
                        "stride_s": event_s / 2 if event_s else None, "positive": 1},
        }

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        assert graph == "model" and array.ndim == 5 and array.shape[2] == 3, array.shape
        self.calls += 1
        p = array.mean(axis=(1, 2, 3, 4)) / 255.0
        return {"scores": np.stack([1 - p, p], axis=1).astype(np.float32)}


def bright_video(path: Path, seconds: float, bright: list[tuple[float, float]]) -> Path:
    """Dark frames, white during the ``bright`` (start_s, end_s) segments."""
    frames = np.full((int(round(seconds * FPS)), SIZE, SIZE, 3), 10, np.uint8)
    for start, end in bright:
        frames[int(start * FPS):int(end * FPS)] = 245
    return write_mp4(path, frames, FPS, crf=10)


# -- pure functions ------------------------------------------------------------------------------------------
def test_window_starts_cover_the_video_end_and_short_videos() -> None:
    assert list(window_starts(10.0, 2.0, 1.0)) == [float(i) for i in range(9)]
    assert list(window_starts(10.5, 2.0, 1.0))[-1] == 8.5  # one more window ending at the video's end
    assert list(window_starts(1.2, 2.0, 1.0)) == [0.0]


def test_merge_events_joins_runs_and_keeps_split_runs_apart() -> None:
    starts = [0, 1, 2, 3, 4, 5, 6]
    ends = [s + 2 for s in starts]
    scores = [0.1, 0.8, 0.9, 0.2, 0.7, 0.1, 0.1]
    events = merge_events(starts, ends, scores, 0.5, min_gap_s=0.0)
    assert [(e["start_s"], e["end_s"], e["score"], e["windows"]) for e in events] == [(1, 4, 0.9, 2), (4, 6, 0.7, 1)]
    joined = merge_events(starts, ends, scores, 0.5, min_gap_s=0.5)
    assert [(e["start_s"], e["end_s"], e["windows"]) for e in joined] == [(1, 6, 3)]
    assert merge_events(starts, ends, scores, 0.95, 0.0) == []


@pytest.mark.parametrize("aggregation", ["mean", "max", "vote"])
def test_numpy_aggregation_matches_the_runs(aggregation: str) -> None:
    probs = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    expected = aggregate_tta(torch.from_numpy(probs), aggregation, 0.4).numpy()
    np.testing.assert_allclose(aggregate_views(probs, aggregation, 0.4), expected, rtol=1e-6)


# -- the predictor on a brightness backend -------------------------------------------------------------------
def test_finds_the_bright_segments_of_a_long_video(tmp_path: Path) -> None:
    video = bright_video(tmp_path / "long.mp4", 40.0, [(10.0, 14.0), (30.0, 32.0)])
    predictor = BehaviorPredictor(BrightnessBackend())
    summary = predictor.run([video], tmp_path / "out", progress=False)
    events = summary["event_list"]
    assert summary["events"] == 2, events
    (first, second) = events
    # windows of 2 s every 1 s: the events span the windows mostly inside the bright segments
    assert 9.0 <= first["start_s"] <= 10.0 and 14.0 <= first["end_s"] <= 15.0, first
    assert 29.0 <= second["start_s"] <= 30.0 and 32.0 <= second["end_s"] <= 33.0, second
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert [r["pred"] for r in rows] == ["tail", "tail"] and rows[0]["item_id"] == "long.mp4#0"
    assert float(rows[0]["score_tail"]) == pytest.approx(first["score"], abs=1e-5) and first["score"] > 0.9
    assert (tmp_path / "out" / "pictures" / "long_timeline.png").is_file()
    assert len(summary["window_scores"][str(video)]["score"]) == 39
    timeline = predictor.last_timeline
    assert timeline is not None and len(timeline.scores) == 39  # (40 - 2) / 1 + 1
    assert timeline.frames_decoded == probe_video(video).num_frames  # one pass over the video


def test_no_event_gives_one_row_and_options_apply(tmp_path: Path) -> None:
    video = bright_video(tmp_path / "calm.mp4", 12.0, [])
    predictor = BehaviorPredictor(BrightnessBackend(), {"stride_s": "2", "window_s": "4", "threshold": "0.3"})
    result = predictor.predict_item(video)
    assert [r.pred for r in result.rows] == ["normal"] and result.rows[0].item_id == "calm.mp4#none"
    assert predictor.last_timeline is not None and predictor.last_timeline.starts == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert predictor.options["threshold"] == 0.3


def test_window_needs_the_run_event_length_or_an_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="window_s"):
        BehaviorPredictor(BrightnessBackend(event_s=None))
    assert BehaviorPredictor(BrightnessBackend(event_s=None), {"window_s": "3"}).options["stride_s"] == 1.5
    with pytest.raises(ConfigError, match="unknown behavior predict option"):
        BehaviorPredictor(BrightnessBackend(), {"strid_s": "1"})
    with pytest.raises(ConfigError, match="stride_s"):
        BehaviorPredictor(BrightnessBackend(), {"stride_s": "0"})


def test_memory_is_flat_in_the_video_length(tmp_path: Path) -> None:
    """10x longer video: the same most frames held at once, and a peak of Python allocations within 1.5x."""
    short = bright_video(tmp_path / "short.mp4", 20.0, [(10.0, 12.0)])
    long = bright_video(tmp_path / "long.mp4", 200.0, [(10.0, 12.0), (150.0, 152.0)])
    held, peaks = [], []
    for video in (short, long):
        predictor = BehaviorPredictor(BrightnessBackend())
        tracemalloc.start()
        predictor.predict_item(video)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert predictor.last_timeline is not None
        held.append(predictor.last_timeline.frames_held_max)
    assert held[0] == held[1] <= 3 * 4 * 3, held  # at most ~ (window / stride + 1) windows of K clips x T frames
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_predict_bytes_and_bad_inputs(tmp_path: Path) -> None:
    video = bright_video(tmp_path / "clip.mp4", 8.0, [(4.0, 6.0)])
    predictor = BehaviorPredictor(BrightnessBackend())
    answer = predictor.predict_bytes(video.read_bytes(), "upload.mp4")
    json.dumps(answer)
    assert len(answer["events"]) == 1 and len(answer["windows"]) == 7
    with pytest.raises(DataError, match="not a video"):
        predictor.predict_bytes(b"hello", "notes.txt")
    with pytest.raises(DataError, match="corrupt|cannot"):
        predictor.predict_bytes(b"\x00" * 100, "broken.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        predictor.discover([tmp_path / "empty"])


def test_frames_missing_at_the_end_reuse_the_last_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header promising more frames than decode: the windows past the end still get scored."""
    import deploy.predictors.behavior as module

    video = bright_video(tmp_path / "v.mp4", 6.0, [(4.0, 6.0)])
    info = probe_video(video)
    longer = type(info)(info.path, info.fps, info.num_frames + 16, info.width, info.height,
                        (info.num_frames + 16) / info.fps)
    monkeypatch.setattr(module, "probe_video", lambda path: longer)
    predictor = BehaviorPredictor(BrightnessBackend())
    predictor.predict_item(video)
    assert predictor.last_timeline is not None and len(predictor.last_timeline.scores) == 7
    assert predictor.last_timeline.scores[-1] > 0.9


# -- a tiny trained run (slow: it trains; run with -m slow) -----------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.deploy.predictors.conftest import train_tiny_run

    return train_tiny_run(["experiment=baseline_old_split"], tmp_path_factory.mktemp("behavior_run"))


@pytest.mark.slow
def test_export_graph_is_the_module_on_raw_clips(trained_run: Path) -> None:
    """The graph with the normalisation inside gives the module's probabilities on the data's clips."""
    from suite.inference import load_trained_module

    module, _, _ = load_trained_module(trained_run)
    (graph,) = module.export_graphs()
    clips = torch.rand(3, *module.spec.input.shape) * 2 - 1  # normalised clips, as the data gives them
    raw = module.export_inputs({"video": clips[:, None]})["model"]
    assert raw.shape == (3, *module.spec.input.shape) and 0 <= raw.min() and raw.max() <= 255
    with torch.inference_mode():
        expected = torch.softmax(module(clips), dim=1)
        np.testing.assert_allclose(graph.network(raw).numpy(), expected.numpy(), atol=1e-5)
    options = module.inference_options()
    assert options["event_s"] == 2.0 and options["stride_s"] == 1.0 and options["clips_per_event"] == 5


@pytest.mark.slow
def test_windows_on_the_test_events_score_as_the_run_did(trained_run: Path, tmp_path: Path) -> None:
    """Windows that coincide with test events (2 s events, windows of 2 s every 1 s from 0) get the TTA
    probability the run's test wrote; predict.py writes its outputs from the checkpoint."""
    import pandas as pd

    from deploy.backends import TorchBackend
    from predict import predict

    test = pd.read_csv(trained_run / "predictions_agg.csv")
    predictor = BehaviorPredictor(TorchBackend(trained_run, threads=1))
    manifest = pd.read_csv(next((trained_run.parent / "data").rglob("test.csv")))
    manifest = manifest.set_index("event_id")
    checked = 0
    for video_id, events in test.groupby("video_id"):
        path = next((trained_run.parent / "data").rglob(f"{video_id}.mp4"))
        timeline = predictor.score_windows(path)
        scores = dict(zip(timeline.starts, timeline.scores, strict=True))
        for row in events.itertuples():
            start = float(manifest.loc[row.item_id, "start_s"])
            assert scores[start] == pytest.approx(row.prob_tail, abs=1e-4), (row.item_id, start)
            checked += 1
    assert checked == len(test) > 0
    out = tmp_path / "predict"
    videos = sorted(path.parent.glob("*.mp4"))[:2]
    summary = predict([str(trained_run), *map(str, videos), "--out", str(out), "--no-progress", "stride_s=2"])
    assert summary["backend"] == "torch" and summary["options"]["stride_s"] == 2.0
    assert len(list((out / "pictures").glob("*_timeline.png"))) == summary["items"] == 2
    assert len(summary["window_scores"][str(videos[0])]["score"]) == 6  # 12 s videos, 2 s windows every 2 s


@pytest.mark.slow
def test_checkpoint_and_bundle_agree(trained_run: Path, tmp_path: Path) -> None:
    exporting = pytest.importorskip("suite.exporting")
    from deploy.backends import OnnxBackend, TorchBackend

    parity = exporting.export_run(trained_run, out=tmp_path / "bundle", latency_runs=2)
    assert parity["passed"], parity
    bundle = Path(parity["bundle"])
    video = next((trained_run.parent / "data").rglob("cam6_v0.mp4"))
    torch_scores = BehaviorPredictor(TorchBackend(trained_run, threads=1)).score_windows(video).scores
    onnx_scores = BehaviorPredictor(OnnxBackend(bundle, threads=1)).score_windows(video).scores
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)


@pytest.mark.slow
def test_evaluate_reads_only_a_new_test_manifest(trained_run: Path, tmp_path: Path) -> None:
    """evaluate.py on new labelled events needs only their manifest: no train or val split is read."""
    import pandas as pd

    from suite.evaluation import evaluate

    data = trained_run.parent / "data"
    test_csv = next(data.rglob("test.csv"))
    new = pd.read_csv(test_csv).groupby("label").head(2)  # four events, both classes: evaluation reads them all
    new = new.assign(video_path=[str(test_csv.parent / p) for p in new["video_path"]])
    new.to_csv(tmp_path / "new_events.csv", index=False)
    metrics = evaluate(trained_run, overrides=[f"data.test_manifest={tmp_path / 'new_events.csv'}"],
                       out_dir=tmp_path / "eval")
    assert "test/f1_tail" in metrics
    assert sum(v for k, v in metrics.items() if k.startswith("test/per_video/") and k.endswith("/events")) == 4
    assert len(pd.read_csv(tmp_path / "eval" / "predictions_agg.csv")) == 4
    used = (tmp_path / "eval" / "manifests_used.txt").read_text()
    assert "new_events.csv" in used
    assert not any(line.startswith(("train", "val")) for line in used.splitlines()), used
