"""The one seeded, group-aware, stratified train/val/test splitter every task uses.

scikit-learn does the work. Without groups, ``train_test_split`` with ``stratify`` holds out exact
fractions. With groups, each held-out split is one fold of ``StratifiedGroupKFold``, so a group (a
source video, a near-duplicate set) never straddles two splits and every split keeps the class mix
as far as whole groups allow. A fraction ``f`` becomes one fold of ``round(1 / f)``, so the
held-out share is about 1/k (0.2, 0.15 as 1/7). Whole groups of unequal sizes make folds of unequal
sizes, so of the folds of a few seeded draws the one closest to the wanted size and class mix is held out;
the same seed gives the same split.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from suite.errors import ConfigError, DataError

DRAWS = 8


def _mismatch(held: np.ndarray, wanted: float, label_of: np.ndarray, spread: set[str]) -> float:
    """How far a hold-out is from the wanted size and from the whole set's class mix, in items; a class
    found in two or more groups (``spread``) but missing from the hold-out costs as much as all items,
    so both sides get every class whenever the groups allow it."""
    classes, counts = np.unique(label_of, return_counts=True)
    share = dict(zip(classes.tolist(), (counts / counts.sum()).tolist(), strict=True))
    held_classes, held_counts = np.unique(label_of[held], return_counts=True)
    have = dict(zip(held_classes.tolist(), held_counts.tolist(), strict=True))
    mix = sum(abs(have.get(c, 0) - share[c] * len(held)) for c in share)
    missing = len(spread - set(have))
    return abs(len(held) - wanted) + mix + missing * len(label_of)


def grouped_split(
    count: int,
    fractions: Mapping[str, float],
    seed: int,
    labels: Sequence[object] | None = None,
    groups: Sequence[object] | None = None,
    what: str = "items",
) -> dict[str, list[int]]:
    """Indices ``0..count-1`` split into ``train`` plus each split of ``fractions`` (e.g. ``{"val": .2,
    "test": .2}``), taken in the order given. Without ``groups`` every item is its own group; without
    ``labels`` the split is not stratified."""
    held = {name: f for name, f in fractions.items() if f}
    for name, fraction in held.items():
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"data.{name}_fraction must be in (0, 1), got {fraction}")
    if sum(held.values()) >= 1.0:
        raise ConfigError(f"the held-out fractions {held} leave nothing to train on (their sum must be < 1)")
    index = np.arange(count)
    group_of = np.asarray([str(g) for g in groups] if groups is not None else index.astype(str))
    label_of = np.asarray([str(v) for v in labels] if labels is not None else np.zeros(count, dtype=str))
    n_groups = len(set(group_of.tolist()))
    if n_groups < len(held) + 1:
        raise DataError(f"need at least {len(held) + 1} {'groups' if groups is not None else what} to split "
                        f"train/{'/'.join(held)} apart, found {n_groups}")
    out: dict[str, list[int]] = {}
    remaining, left = index, 1.0
    for name, fraction in held.items():
        if groups is None:
            fold = _stratified_hold_out(remaining, label_of, fraction * count, seed, len(held) - len(out))
        else:
            fold = _grouped_hold_out(remaining, label_of, group_of, fraction, left, count, seed)
        out[name] = sorted(remaining[fold].tolist())
        remaining = np.setdiff1d(remaining, remaining[fold])
        left -= fraction
    return {"train": remaining.tolist(), **out}


def _stratified_hold_out(remaining: np.ndarray, label_of: np.ndarray, wanted: float, seed: int,
                         splits_left: int) -> np.ndarray:
    """Positions in ``remaining`` of a stratified, seeded hold-out of ``wanted`` items (no groups)."""
    from sklearn.model_selection import train_test_split

    size = int(min(max(1, round(wanted)), len(remaining) - splits_left))
    strata = label_of[remaining]
    _, counts = np.unique(strata, return_counts=True)
    # stratifying needs two items of every class and room for one of each class on both sides
    stratify = strata if counts.min() >= 2 and len(counts) <= min(size, len(remaining) - size) else None
    positions = np.arange(len(remaining))
    _, held = train_test_split(positions, test_size=size, random_state=seed, stratify=stratify)
    return np.sort(held)


def _grouped_hold_out(remaining: np.ndarray, label_of: np.ndarray, group_of: np.ndarray, fraction: float,
                      left: float, count: int, seed: int) -> np.ndarray:
    """Positions in ``remaining`` of whole groups holding about ``fraction`` of ``count`` items."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups_left = len(set(group_of[remaining].tolist()))
    folds = min(max(2, round(left / fraction)), groups_left)
    strata = label_of[remaining]
    if np.unique(strata, return_counts=True)[1].max() < folds:
        strata = np.zeros(len(remaining), dtype=str)  # every class rarer than the folds: cannot stratify
    candidates = []
    # StratifiedGroupKFold only shuffles groups of equal class mix, so a few seeded draws widen the
    # choice (one draw for thousands of groups, where it is slow); each fold is a group-disjoint hold-out
    for draw in range(DRAWS if groups_left <= 1000 else 1):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed * DRAWS + draw)
        with warnings.catch_warnings():
            # "the least populated class has fewer members than n_splits": expected for rare classes
            warnings.simplefilter("ignore", UserWarning)
            candidates += [fold for _, fold in splitter.split(remaining, strata, group_of[remaining])]
    spread = {c for c in set(label_of[remaining].tolist())
              if len(set(group_of[remaining][label_of[remaining] == c].tolist())) >= 2}
    return min(candidates, key=lambda f: _mismatch(remaining[f], fraction * count, label_of, spread))
