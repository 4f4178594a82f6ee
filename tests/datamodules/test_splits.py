"""Split builders and tools.make_splits: video-disjoint old split, intra-video overlap, boosted tail share."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from datamodules.splits import add_event_ids, boost_tail, build_all_splits, intravideo_split, old_split, summarize
from tools import make_splits


def _events(n_videos: int = 10, per_video: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        n_tail = int(rng.integers(0, 4))
        for e in range(per_video):
            rows.append({"video_path": f"videos/v{v}.mp4", "video_id": f"v{v}", "start_s": 2.0 * e,
                         "end_s": 2.0 * e + 2.0, "label": "tail" if e < n_tail else "normal"})
    return add_event_ids(pd.DataFrame(rows))


def test_old_split_shares_no_video() -> None:
    events = _events()
    train, val = old_split(events, 0.25, "tail", seed=1)
    assert len(train) + len(val) == len(events)
    assert not set(train["video_id"]) & set(val["video_id"])
    assert (val["label"] == "tail").any()


def test_intravideo_split_overlaps_and_puts_tail_on_both_sides() -> None:
    events = _events()
    train, val = intravideo_split(events, 0.25, "tail", seed=1)
    assert len(train) + len(val) == len(events)
    assert set(train["event_id"]).isdisjoint(val["event_id"])
    assert set(train["video_id"]) == set(val["video_id"])  # every video (8 events each) on both sides
    tail_counts = events[events["label"] == "tail"].groupby("video_id").size()
    for video in tail_counts[tail_counts >= 2].index:
        assert (train[(train.video_id == video)]["label"] == "tail").any()
        assert (val[(val.video_id == video)]["label"] == "tail").any()
    summary = summarize("intravideo", train, val, "tail")
    assert summary.videos_overlapping == 10 and summary.videos_tail_both_sides == int((tail_counts >= 2).sum())


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_boosted_split_reaches_tail_share(share: float) -> None:
    events = _events()
    boosted = boost_tail(events, share, "tail", seed=0)
    tail_share = (boosted["label"] == "tail").mean()
    assert abs(tail_share - share) < 0.01
    assert boosted["event_id"].is_unique
    assert len(boosted[boosted["label"] == "normal"]) == len(events[events["label"] == "normal"])


def test_splits_are_deterministic_and_seed_dependent() -> None:
    events = _events()
    a = build_all_splits(events, 0.25, "tail", seed=3)
    b = build_all_splits(events, 0.25, "tail", seed=3)
    c = build_all_splits(events, 0.25, "tail", seed=4)
    for name in ("old", "intravideo", "boosted"):
        pd.testing.assert_frame_equal(a[name][1], b[name][1])
    assert set(a["intravideo"][1]["event_id"]) != set(c["intravideo"][1]["event_id"])


def test_make_splits_from_events_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    events = _events(n_videos=12)
    events.drop(columns="event_id").to_csv(tmp_path / "events.csv", index=False)
    rc = make_splits.main(["--events", str(tmp_path / "events.csv"), "--out-dir", str(tmp_path / "out"),
                           "--timestamp", "20260105_162028", "--seed", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "videos appear in BOTH train and val" in out and "videos have tail events in BOTH splits" in out
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "train_intravideo_20260105_162028.csv" in names and "test_20260105_162028.csv" in names
    test = pd.read_csv(tmp_path / "out" / "test_20260105_162028.csv")
    train_old = pd.read_csv(tmp_path / "out" / "train_old_20260105_162028.csv")
    boosted = pd.read_csv(tmp_path / "out" / "train_boosted_20260105_162028.csv")
    assert not set(test["video_id"]) & set(train_old["video_id"])  # test videos held out of every split
    assert abs((boosted["label"] == "tail").mean() - 0.3) < 0.02
    assert all(Path(p).is_absolute() for p in test["video_path"])


def _clip(path: Path, frames: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 16
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_make_splits_from_clip_folder_with_column_mapping(tmp_path: Path) -> None:
    rows = []
    for g in range(6):
        for k, label in enumerate(["fight", "fight", "nofight", "nofight"]):
            rel = f"{label}/g{g}_{k}.mp4"
            _clip(tmp_path / "clips" / rel)
            rows.append({"path": rel, "label": label, "source_group": f"yt{g:02d}"})
    pd.DataFrame(rows).to_csv(tmp_path / "clips" / "labels.csv", index=False)
    rc = make_splits.main(["--clips-dir", str(tmp_path / "clips"), "--labels", str(tmp_path / "clips" / "labels.csv"),
                           "--video-id-column", "source_group", "--tail-label", "fight", "--out-dir",
                           str(tmp_path / "out"), "--timestamp", "t"])
    assert rc == 0
    train = pd.read_csv(tmp_path / "out" / "train_intravideo_t.csv")
    val = pd.read_csv(tmp_path / "out" / "val_intravideo_t.csv")
    assert set(train["video_id"]) & set(val["video_id"])
    assert train["start_s"].eq(0).all() and np.allclose(train["end_s"], 1.2)
    assert set(train["video_id"]).issubset({f"yt{g:02d}" for g in range(6)})


def test_make_splits_rejects_unknown_mapping(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "clips").mkdir()
    pd.DataFrame([{"path": "a.mp4", "label": "x"}]).to_csv(tmp_path / "clips" / "labels.csv", index=False)
    rc = make_splits.main(["--clips-dir", str(tmp_path / "clips"), "--labels", str(tmp_path / "clips" / "labels.csv"),
                           "--video-id-column", "source_group", "--out-dir", str(tmp_path / "out")])
    assert rc == 2 and "source_group" in capsys.readouterr().err


def test_made_up_event_ids_tell_clips_of_one_group_apart() -> None:
    clips = pd.DataFrame({"video_path": ["fight/a.mp4", "fight/b.mp4", "videos/v1.mp4"], "video_id": ["g1", "g1", "v1"],
                          "start_s": [0.0, 0.0, 2.0], "end_s": [2.0, 2.0, 4.0], "label": ["tail"] * 3})
    ids = add_event_ids(clips)["event_id"].tolist()
    assert ids == ["g1/a@0.00-2.00", "g1/b@0.00-2.00", "v1@2.00-4.00"]
    given = add_event_ids(clips.assign(event_id=["x", "y", "z"]))
    assert given["event_id"].tolist() == ["x", "y", "z"]
