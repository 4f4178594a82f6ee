"""Split builders for event manifests: video-disjoint ("old"), intra-video, and tail-boosted.

An events table has the columns ``video_path, video_id, start_s, end_s, label`` (+ optional
``event_id``, ``camera``). Every builder is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """An ``event_id`` per row (kept when the table has one) so predictions can be traced to events."""
    events = events.copy()
    if "event_id" not in events.columns:
        events["event_id"] = [
            f"{v}@{float(s):.2f}-{float(e):.2f}"
            for v, s, e in zip(events["video_id"], events["start_s"], events["end_s"], strict=True)
        ]
    events["event_id"] = events["event_id"].astype(str)
    return events


def _is_tail(events: pd.DataFrame, tail_label: str) -> np.ndarray:
    return (events["label"].astype(str) == str(tail_label)).to_numpy()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def hold_out_videos(
    events: pd.DataFrame, fraction: float, tail_label: str, seed: int, group_column: str = "video_id"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): whole groups (videos, or cameras) held out.

    The held-out side gets at least one group with tail events, and so does the rest when two or more
    groups have tail events, so that both sides can be scored (and trained) on the tail class.
    """
    groups = sorted(events[group_column].astype(str).unique())
    if len(groups) < 2:
        raise DataError(f"cannot hold out a test set: only {len(groups)} distinct {group_column} value(s)")
    rng = _rng(seed)
    order = list(rng.permutation(groups))
    tail = _is_tail(events, tail_label)
    with_tail = set(events.loc[tail, group_column].astype(str))
    # Put one group with tail events first so the held-out set can be scored on the tail class.
    first = next((g for g in order if g in with_tail), order[0])
    order.remove(first)
    order.insert(0, first)
    target = max(1, int(round(fraction * len(events))))
    chosen, count = [], 0
    sizes = events[group_column].astype(str).value_counts()
    tail_left = set(with_tail)
    for g in order:
        if count >= target or len(chosen) >= len(groups) - 1:
            break
        if g in tail_left and len(tail_left) == 1 and chosen:
            continue  # keep at least one group with tail events on the training side
        chosen.append(g)
        tail_left.discard(g)
        count += int(sizes[g])
    mask = events[group_column].astype(str).isin(chosen).to_numpy()
    return events[~mask].reset_index(drop=True), events[mask].reset_index(drop=True)


def old_split(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Video-disjoint split: every video on one side only."""
    return hold_out_videos(events, val_fraction, tail_label, seed, group_column="video_id")


def intravideo_split(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events of one video on both sides; a video with >= 2 tail events has tail events on both sides."""
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


def build_all_splits(
    events: pd.DataFrame, val_fraction: float, tail_label: str, seed: int, boost_share: float = 0.3
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The three strategies of the training plan from one events table: old, intravideo, boosted."""
    events = add_event_ids(events)
    old = old_split(events, val_fraction, tail_label, seed)
    intra = intravideo_split(events, val_fraction, tail_label, seed)
    boosted = (boost_tail(intra[0], boost_share, tail_label, seed), boost_tail(intra[1], boost_share, tail_label,
                                                                               seed + 1))
    return {"old": old, "intravideo": intra, "boosted": boosted}
