"""Feature cache: keys, skipping, resuming, locking between processes, and clear errors for bad inputs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.feature_cache import AugmentSpec, CopyPlan, FeatureCache, MappedFeatures
from datamodules.synthetic.violence import GENERATOR
from lightning_modules.nets.violence import FrameEncoder
from suite.errors import ConfigError, DataError

DIM = 6


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = GENERATOR.ensure(tmp_path_factory.mktemp("vids") / "v", 3, videos={"train": 4}, n_frames=12, size=32)
    return root, sorted(root.rglob("*.mp4"))


def spec(backbone: str = "fake", frame_size: int = 16) -> FrameEncoder:
    """Settings only: the cache tests extract with CountingEncoder, so the backbone is never built."""
    return FrameEncoder(backbone, pretrained=False, frame_size=frame_size, feature_dim=DIM)


class CountingEncoder:
    """Mean colour and brightness statistics per frame: cheap, deterministic, sensitive to augmentation."""

    def __init__(self, fail_after: int | None = None, nan: bool = False):
        self.calls = 0
        self.frames = 0
        self.fail_after = fail_after
        self.nan = nan

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.frames += len(frames)
        f = frames.astype(np.float32) / 255.0
        out = np.concatenate([f.mean((1, 2)), f.std((1, 2))], axis=1)
        if self.nan:
            out[0, 0] = np.nan
        return out


def make_cache(tmp_path: Path, videos, **kw) -> FeatureCache:
    root, paths = videos
    args = {"encoder": spec(), "num_frames": 8} | kw
    return FeatureCache(tmp_path / "cache", root, paths, args["num_frames"], args["encoder"])


def test_extract_then_second_run_skips(tmp_path: Path, videos) -> None:
    cache = make_cache(tmp_path, videos)
    plans = [CopyPlan(0, list(range(4)), None), CopyPlan(1, [0, 1], AugmentSpec(0.3, 20.0, 0.02))]
    enc = CountingEncoder()
    report = cache.ensure(plans, progress=False, encoder_factory=lambda: enc)
    assert not report.skipped and report.sequences_written == 6 and report.videos_decoded == 4
    again = CountingEncoder()
    report2 = make_cache(tmp_path, videos).ensure(plans, progress=False, encoder_factory=lambda: again)
    assert report2.skipped and again.calls == 0
    clean = MappedFeatures(cache.paths(plans)[0])
    aug = MappedFeatures(cache.paths(plans)[1])
    assert clean.shape == (4, 8, DIM) and clean.dtype == np.float16 and aug.shape == (2, 8, DIM)
    assert np.isfinite(clean[3]).all()
    assert not np.allclose(clean[0], aug[0])  # the augmented copy differs from the clean one


def test_cache_key_changes_with_backbone_frames_and_copy(tmp_path: Path, videos) -> None:
    plan = CopyPlan(0, [0, 1], None)
    base = make_cache(tmp_path, videos).paths([plan])[0]
    assert make_cache(tmp_path, videos).paths([plan])[0] == base
    assert make_cache(tmp_path, videos, encoder=spec("other")).paths([plan])[0] != base
    assert make_cache(tmp_path, videos, num_frames=9).paths([plan])[0] != base
    assert make_cache(tmp_path, videos, encoder=spec(frame_size=20)).paths([plan])[0] != base
    aug1 = make_cache(tmp_path, videos).paths([CopyPlan(1, [0, 1], AugmentSpec())])[1]
    aug2 = make_cache(tmp_path, videos).paths([CopyPlan(2, [0, 1], AugmentSpec())])[2]
    aug1_strong = make_cache(tmp_path, videos).paths([CopyPlan(1, [0, 1], AugmentSpec(0.3, 20, 0.02))])[1]
    assert len({base, aug1, aug2, aug1_strong}) == 4


def test_interrupted_extraction_resumes(tmp_path: Path, videos) -> None:
    plans = [CopyPlan(0, list(range(4)), None)]
    first = CountingEncoder(fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        make_cache(tmp_path, videos).ensure(plans, progress=False, batch_frames=8, commit_every_s=0.0,
                                            encoder_factory=lambda: first)
    done = make_cache(tmp_path, videos).done_rows(plans[0])
    assert done.sum() == 1  # one video's batch made it to disk before the interruption
    second = CountingEncoder()
    report = make_cache(tmp_path, videos).ensure(plans, progress=False, batch_frames=8,
                                                 encoder_factory=lambda: second)
    assert report.sequences_written == 3 and second.frames == 3 * 8
    reference = FeatureCache(tmp_path / "ref", videos[0], videos[1], 8, spec())
    reference.ensure(plans, progress=False, encoder_factory=CountingEncoder)
    resumed = MappedFeatures(make_cache(tmp_path, videos).paths(plans)[0])
    full = MappedFeatures(reference.paths(plans)[0])
    for row in range(4):
        np.testing.assert_array_equal(resumed[row], full[row])


def test_unreadable_video_is_named(tmp_path: Path, videos) -> None:
    root, paths = videos
    bad_root = tmp_path / "data"
    (bad_root / "fight").mkdir(parents=True)
    good = bad_root / "fight" / "good.mp4"
    good.write_bytes(paths[0].read_bytes())
    broken = bad_root / "fight" / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 10)
    cache = FeatureCache(tmp_path / "cache", bad_root, [broken, good], 8, spec())
    plans = [CopyPlan(0, [0, 1], None)]
    with pytest.raises(DataError, match="broken.mp4"):
        cache.ensure(plans, progress=False, encoder_factory=CountingEncoder)
    assert cache.done_rows(plans[0]).tolist() == [False, True]  # the readable one was kept
    report = cache.ensure(plans, progress=False, skip_bad_videos=True, encoder_factory=CountingEncoder)
    assert list(report.bad_videos) == [str(broken.resolve())]


def test_nan_features_are_a_clear_error(tmp_path: Path, videos) -> None:
    with pytest.raises(DataError, match=r"NaN/inf features.* for .*\.mp4"):
        make_cache(tmp_path, videos).ensure([CopyPlan(0, [0], None)], progress=False,
                                            encoder_factory=lambda: CountingEncoder(nan=True))


def test_cache_inside_the_data_folder_is_refused(tmp_path: Path, videos) -> None:
    root, paths = videos
    with pytest.raises(ConfigError, match="inside the data folder"):
        FeatureCache(root / ".cache", root, paths, 8, spec())


def test_mapped_features_release_keeps_values(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    data = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float16)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=data.shape)
    mm[:] = data
    mm.flush()
    arr = MappedFeatures(path, release_every=2)
    for _ in range(2):
        for i in range(5):
            np.testing.assert_array_equal(arr[i], data[i])
    import pickle

    clone = pickle.loads(pickle.dumps(arr))  # DataLoader workers get a picklable view
    np.testing.assert_array_equal(clone[4], data[4])


class SlowEncoder(CountingEncoder):
    """Records how many extractions run at once."""

    active = 0
    most = 0
    guard = threading.Lock()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        with SlowEncoder.guard:
            SlowEncoder.active += 1
            SlowEncoder.most = max(SlowEncoder.most, SlowEncoder.active)
        time.sleep(0.05)
        try:
            return super().__call__(frames)
        finally:
            with SlowEncoder.guard:
                SlowEncoder.active -= 1


def test_two_extractors_never_write_one_copy_at_once(tmp_path: Path, videos) -> None:
    plans = [CopyPlan(0, list(range(4)), None)]
    reports = []

    def run() -> None:
        reports.append(make_cache(tmp_path, videos).extract(plans, progress=False, batch_frames=8,
                                                            encoder_factory=SlowEncoder))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert SlowEncoder.most == 1  # the second waited for the first's lock
    assert sorted(r.skipped for r in reports) == [False, True]  # ... then found the copy complete
    assert make_cache(tmp_path, videos).ready(plans)


def test_waiting_process_returns_when_the_extractor_is_done(tmp_path: Path, videos) -> None:
    plans = [CopyPlan(0, list(range(4)), None), CopyPlan(1, [0, 1], AugmentSpec())]
    cache = make_cache(tmp_path, videos)
    assert not cache.ready(plans)
    errors: list[Exception] = []

    def wait() -> None:
        try:
            make_cache(tmp_path, videos).wait_until_ready(plans, idle_timeout_s=30, poll_s=0.05)
        except Exception as err:  # reported below
            errors.append(err)

    waiter = threading.Thread(target=wait)
    with cache.locked(plans):  # the extractor has begun: the waiter must not give up nor extract
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()
        cache.ensure(plans, progress=False, encoder_factory=CountingEncoder)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and not errors


def test_waiting_without_an_extractor_fails_clearly(tmp_path: Path, videos) -> None:
    plans = [CopyPlan(0, [0, 1], None)]
    with pytest.raises(DataError, match="none did"):
        make_cache(tmp_path, videos).wait_until_ready(plans, idle_timeout_s=0.2, poll_s=0.05)
    assert not list((tmp_path / "cache").rglob("features.npy"))  # a waiting process writes nothing


def test_skipped_bad_videos_still_mark_the_set_ready(tmp_path: Path, videos) -> None:
    root, paths = videos
    data = tmp_path / "data"
    (data / "fight").mkdir(parents=True)
    (data / "fight" / "good.mp4").write_bytes(paths[0].read_bytes())
    (data / "fight" / "broken.mp4").write_bytes(b"not a video" * 10)
    cache = FeatureCache(tmp_path / "cache", data, sorted((data / "fight").iterdir()), 8, spec())
    plans = [CopyPlan(0, [0, 1], None)]
    report = cache.extract(plans, progress=False, skip_bad_videos=True, encoder_factory=CountingEncoder)
    assert len(report.bad_videos) == 1
    # the copy is not complete (one row missing), yet waiting ranks must not wait for it forever
    assert cache.ready(plans) and cache.done_rows(plans[0]).tolist() == [False, True]  # broken, good


def test_copies_of_disjoint_videos_decode_only_their_videos(tmp_path: Path, videos, monkeypatch) -> None:
    # the debug modes give each video one copy: extraction decodes and encodes those videos once each
    cache = make_cache(tmp_path, videos)
    decoded: list[int] = []
    decode = cache._decode
    monkeypatch.setattr(cache, "_decode", lambda i: decoded.append(i) or decode(i))
    plans = [CopyPlan(0, [0, 3], None), CopyPlan(1, [1], AugmentSpec(0.3, 20.0, 0.02))]
    enc = CountingEncoder()
    report = cache.ensure(plans, progress=False, encoder_factory=lambda: enc)
    assert sorted(decoded) == [0, 1, 3] and report.videos_decoded == 3
    assert report.sequences_written == 3 and enc.frames == 3 * 8
    assert MappedFeatures(cache.paths(plans)[1]).shape == (1, 8, DIM)
