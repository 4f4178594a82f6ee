"""The one seeded, group-aware, stratified train/val/test splitter every task uses.

scikit-learn's ``StratifiedGroupKFold`` does the work: each held-out split is one fold of it, so a
group (a source video, a near-duplicate set) never straddles two splits and every split keeps the
class mix as far as whole groups allow. A fraction ``f`` becomes one fold of ``round(1 / f)``, so the
held-out share is 1/k (0.2 exactly, 0.15 as 1/7); the same seed gives the same split.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from suite.errors import ConfigError, DataError


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
    from sklearn.model_selection import StratifiedGroupKFold

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
        groups_left = len(set(group_of[remaining].tolist()))
        folds = min(max(2, round(left / fraction)), groups_left)
        splitter = StratifiedGroupKFold(n_splits=max(2, folds), shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # "the least populated class has fewer members than n_splits": expected for rare classes
            warnings.simplefilter("ignore", UserWarning)
            _, fold = next(splitter.split(remaining, label_of[remaining], group_of[remaining]))
        out[name] = sorted(remaining[fold].tolist())
        remaining = np.setdiff1d(remaining, remaining[fold])
        left -= fraction
    out["train"] = remaining.tolist()
    return {"train": out.pop("train"), **out}
