"""Split builders for event manifests: video-disjoint ("old"), intra-video, and tail-boosted.

An events table has the columns ``video_path, video_id, start_s, end_s, label`` (+ optional
``event_id``, ``camera``). Every builder is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import pandas as pd

from suite.errors import DataError

REQUIRED_COLUMNS = ("video_path", "video_id", "start_s", "end_s", "label")


@dataclass(frozen=True)
class SplitSummary:
    name: str
    train_events: int
    val_events: int
    train_tail_pct: float
    val_tail_pct: float
    videos_overlapping: int
    videos_total: int
    videos_tail_both_sides: int

    def lines(self) -> list[str]:
        return [
            f"[{self.name}] train: {self.train_events} events, {self.train_tail_pct:.1f}% tail | "
            f"val: {self.val_events} events, {self.val_tail_pct:.1f}% tail",
            f"[{self.name}] {self.videos_overlapping} out of {self.videos_total} videos appear in BOTH train and val; "
            f"{self.videos_tail_both_sides} videos have tail events in BOTH splits",
        ]


def add_event_ids(events: pd.DataFrame) -> pd.DataFrame:
    """An ``event_id`` per row (kept when the table has one) so predictions can be traced to events.

    A made-up id is ``<video_id>@<start>-<end>``, with the video file's stem after the video id when
    the two differ: several one-event clips of one source group (``video_id`` = the group) often share
    their times, and the id must still tell them apart (the splits are checked to share no id).
    """
    events = events.copy()
    if "event_id" not in events.columns:
        ids = []
        for v, path, s, e in zip(events["video_id"], events["video_path"], events["start_s"], events["end_s"],
                                 strict=True):
            stem = PurePath(str(path)).stem
            video = str(v) if stem == str(v) else f"{v}/{stem}"
            ids.append(f"{video}@{float(s):.2f}-{float(e):.2f}")
        events["event_id"] = ids
    events["event_id"] = events["event_id"].astype(str)
    return events


def _is_tail(events: pd.DataFrame, tail_label: str) -> np.ndarray:
    return (events["label"].astype(str) == str(tail_label)).to_numpy()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


#: seeds tried (seed, seed + 1, ...) until the held-out side and the rest both have tail groups
HOLD_OUT_ATTEMPTS = 20


def hold_out_videos(
    events: pd.DataFrame, fraction: float, tail_label: str, seed: int, group_column: str = "video_id",
    split_name: str = "test",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): whole groups (videos, or cameras) held out, stratified by the tail label.

    The suite's one group-aware splitter (:func:`datamodules.grouped_split.grouped_split`) picks the
    groups. The held-out side must have a group with tail events, and so must the rest when two or
    more groups have tail events, or one side could not be scored (or trained) on the tail class; a
    fold that misses this is redrawn with the next seed, so the same ``seed`` still gives the same rows.
    """
    from datamodules.grouped_split import grouped_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"the {split_name} fraction must be in (0, 1), got {fraction}")
    groups = events[group_column].astype(str).to_numpy()
    if len(set(groups.tolist())) < 2:
        raise DataError(f"cannot hold out a {split_name} set: only {len(set(groups.tolist()))} distinct "
                        f"{group_column} value(s)")
    tail = _is_tail(events, tail_label)
    tail_groups = set(groups[tail].tolist())
    held: list[int] = []
    for attempt in range(HOLD_OUT_ATTEMPTS):
        parts = grouped_split(len(events), {split_name: fraction}, seed + attempt, labels=tail.tolist(),
                              groups=groups.tolist(), what=f"{group_column} groups")
        held = parts[split_name]
        held_tail = set(groups[held][tail[held]].tolist())
        if held_tail and (len(tail_groups) < 2 or tail_groups - held_tail):
            break
    mask = np.zeros(len(events), dtype=bool)
    mask[held] = True
    return events[~mask].reset_index(drop=True), events[mask].reset_index(drop=True)


def old_split(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Video-disjoint split: every video on one side only."""
    return hold_out_videos(events, val_fraction, tail_label, seed, group_column="video_id", split_name="val")


def intravideo_split(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events of one video on both sides; a video with >= 2 tail events has tail events on both sides.

    Not :func:`~datamodules.grouped_split.grouped_split`: this split cuts *inside* each group on
    purpose, and stratified folds over (video, class) cannot promise both sides a tail event of a
    video that has only two.
    """
    rng = _rng(seed)
    tail = _is_tail(events, tail_label)
    val_rows: list[int] = []
    for _, idx in sorted(events.groupby(events["video_id"].astype(str)).indices.items()):
        for is_tail in (True, False):
            rows = [int(i) for i in idx if tail[i] == is_tail]
            if not rows:
                continue
            rows = list(rng.permutation(rows))
            n = len(rows)
            k = int(round(val_fraction * n))
            if n >= 2:
                k = min(max(k, 1), n - 1)  # both sides get some of this video's events of this class
            else:
                k = int(rng.random() < val_fraction)
            val_rows.extend(rows[:k])
    mask = np.zeros(len(events), dtype=bool)
    mask[val_rows] = True
    return events[~mask].reset_index(drop=True), events[mask].reset_index(drop=True)


def boost_tail(events: pd.DataFrame, target_share: float, tail_label: str, seed: int) -> pd.DataFrame:
    """Oversample tail events (duplicated rows, ids suffixed ``#dupN``) until they are ``target_share`` of the rows."""
    if not 0.0 < target_share < 1.0:
        raise DataError(f"boost target share must be in (0, 1), got {target_share}")
    tail = _is_tail(events, tail_label)
    n_tail, n_other = int(tail.sum()), int((~tail).sum())
    if n_tail == 0:
        return events.reset_index(drop=True)
    wanted = int(round(target_share * n_other / (1.0 - target_share)))
    extra = wanted - n_tail
    if extra <= 0:
        return events.reset_index(drop=True)
    rng = _rng(seed)
    tail_rows = events[tail]
    picks = np.concatenate([rng.permutation(len(tail_rows)) for _ in range(extra // len(tail_rows) + 1)])[:extra]
    dups = tail_rows.iloc[picks].copy()
    counts: dict[str, int] = {}
    ids = []
    for eid in dups["event_id"]:
        counts[eid] = counts.get(eid, 0) + 1
        ids.append(f"{eid}#dup{counts[eid]}")
    dups["event_id"] = ids
    return pd.concat([events, dups], ignore_index=True)


def summarize(name: str, train: pd.DataFrame, val: pd.DataFrame, tail_label: str) -> SplitSummary:
    tv, vv = set(train["video_id"].astype(str)), set(val["video_id"].astype(str))
    t_tail = set(train.loc[_is_tail(train, tail_label), "video_id"].astype(str))
    v_tail = set(val.loc[_is_tail(val, tail_label), "video_id"].astype(str))

    def pct(df: pd.DataFrame) -> float:
        return 100.0 * float(_is_tail(df, tail_label).mean()) if len(df) else 0.0

    return SplitSummary(name, len(train), len(val), pct(train), pct(val), len(tv & vv), len(tv | vv),
                        len(t_tail & v_tail))


STRATEGIES = ("old", "intravideo", "boosted")


def build_split(
    events: pd.DataFrame, strategy: str, val_fraction: float, tail_label: str, seed: int, boost_share: float = 0.3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) of one strategy of the training plan: old, intravideo or boosted."""
    events = add_event_ids(events)
    if strategy == "old":
        return old_split(events, val_fraction, tail_label, seed)
    if strategy not in STRATEGIES:
        raise DataError(f"unknown split strategy '{strategy}' (strategies: {', '.join(STRATEGIES)})")
    train, val = intravideo_split(events, val_fraction, tail_label, seed)
    if strategy == "boosted":
        train = boost_tail(train, boost_share, tail_label, seed)
        val = boost_tail(val, boost_share, tail_label, seed + 1)
    return train, val


def build_all_splits(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int, boost_share: float = 0.3
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The three strategies of the training plan from one events table: old, intravideo, boosted."""
    return {name: build_split(events, name, val_fraction, tail_label, seed, boost_share) for name in STRATEGIES}
