"""What a segmentation dataset's masks hold, checked once before training.

A mask read the wrong way does not crash: it trains a model to predict background everywhere
("accuracy 1.0, F1 0", seed 002's loss going to 0.0). So the masks are read at setup and the
dataset is refused, naming the files and what they hold, when

- a mask is not one channel of values (colour, transparency) or cannot be read;
- a JPEG mask holds more than two values (lossy compression moves the values at every edge);
- ``data.foreground_value`` is in no mask (the values found are listed);
- every mask is empty, or every mask is all foreground.

More than two values in PNG masks with ``data.foreground_value=null`` (every non-zero value is
foreground) is a warning: CDnet-style "unknown" values or several classes may be meant that way.
Large datasets are checked on an evenly spread sample of ``MAX_CHECKED`` masks, which costs a few
seconds; every mask is still read through the same reader when it is loaded.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datamodules.images import read_mask
from suite.errors import DataError

MAX_CHECKED = 1000
MAX_VALUES = 64  # values kept per mask, most frequent first (16-bit or float masks may hold thousands)
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class MaskValues:
    """The values of one mask: ``counts`` maps value -> pixels (the most frequent ``MAX_VALUES``)."""

    path: Path
    dtype: str
    counts: dict[float, int]
    distinct: int
    pixels: int

    @property
    def jpeg(self) -> bool:
        return self.path.suffix.lower() in JPEG_SUFFIXES

    def foreground(self, foreground_value: float | None) -> int:
        """Pixels that count as foreground (``None``: every non-zero value)."""
        if foreground_value is None:
            return self.pixels - self.counts.get(0, 0)
        return self.counts.get(foreground_value, 0)

    def off_binary(self) -> int:
        """Pixels outside the two most frequent values (JPEG ringing, "unknown" labels)."""
        top = sorted(self.counts.values(), reverse=True)
        return self.pixels - sum(top[:2])



def mask_values(mask: np.ndarray, path: Path) -> MaskValues:
    if mask.dtype == np.uint8:
        # a histogram: 20x faster than np.unique or np.bincount (which copies to int64) on 8-bit masks
        bins = cv2.calcHist([np.ascontiguousarray(mask)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
        values = np.flatnonzero(bins)
        counts = bins[values]
    else:
        values, counts = np.unique(mask, return_counts=True)
    order = np.argsort(counts, kind="stable")[::-1][:MAX_VALUES]
    as_number = (lambda v: int(v)) if np.issubdtype(mask.dtype, np.integer) else float
    return MaskValues(path, str(mask.dtype), {as_number(values[i]): int(counts[i]) for i in order},
                      len(values), int(mask.size))


def evenly_spread(items: Sequence[Path], limit: int) -> list[Path]:
    """At most ``limit`` items spread over the whole list (the same ones every run)."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


@dataclass
class MaskCheck:
    """The masks read (``checked``), those refused by the reader (``refused``: path, reason) and the total."""

    where: str
    total: int
    checked: list[MaskValues] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)

    def errors(self, foreground_value: float | None) -> list[str]:
        """Why training on these masks would be wrong, one sentence per problem (empty: usable)."""
        out = []
        if self.refused:
            # the first reason in full; the other files by name (their reasons are mostly the same)
            others = [str(path) for path, _ in self.refused[1:6]]
            more = f", ... ({len(self.refused) - 6} more)" if len(self.refused) > 6 else ""
            also = f". Also refused: {', '.join(others)}{more}" if others else ""
            out.append(f"{len(self.refused)} of {self.read} masks read cannot be used: {self.refused[0][1]}{also}")
        lossy = [m for m in self.checked if m.jpeg and m.distinct > 2]
        if lossy:
            worst = max(lossy, key=MaskValues.off_binary)
            out.append(
                f"{len(lossy)} JPEG mask(s) hold more than two values, e.g. {worst.path} holds {worst.distinct} "
                f"values ({worst.off_binary()} of {worst.pixels} pixels are neither of its two main values "
                f"{_values(sorted(worst.counts, key=worst.counts.get, reverse=True)[:2])}): JPEG compression "
                "changes mask values at every edge, so part of the foreground would be lost or invented. "
                "Save the masks as PNG (lossless); from JPEG only, threshold at the middle value first")
        if not self.checked:
            return out
        if foreground_value is not None and all(m.counts.get(foreground_value, 0) == 0 for m in self.checked):
            out.append(
                f"data.foreground_value={_value(foreground_value)} is in none of the {self.described} "
                f"({self.value_summary()}); set data.foreground_value=<the foreground value>, "
                f"e.g. data.foreground_value={_value(self.likely_foreground())}, or data.foreground_value=null "
                "to count every non-zero value as foreground")
        elif all(m.foreground(foreground_value) == 0 for m in self.checked):
            out.append(f"every mask is empty: none of the {self.described} has a foreground pixel "
                       f"({self.value_summary()}, foreground: {self.rule(foreground_value)}); a model would learn "
                       "to predict background everywhere. Check data.foreground_value and the masks folder")
        elif all(m.foreground(foreground_value) == m.pixels for m in self.checked):
            out.append(f"every mask is all foreground: every pixel of the {self.described} is foreground "
                       f"({self.value_summary()}, foreground: {self.rule(foreground_value)}); check "
                       "data.foreground_value (e.g. ISBI membranes are 0, cells 255)")
        return out

    def warnings(self, foreground_value: float | None) -> list[str]:
        several = [m for m in self.checked if m.distinct > 2 and not m.jpeg]
        if foreground_value is not None or not several:
            return []
        return [f"{len(several)} of the {self.described} hold more than two values, e.g. {several[0].path} "
                f"({_values(sorted(several[0].counts)[:8])}); with data.foreground_value=null every non-zero value "
                "is foreground: set data.foreground_value=<v> if only one value is"]

    def raise_errors(self, foreground_value: float | None) -> None:
        errors = self.errors(foreground_value)
        if errors:
            raise DataError(f"the masks of {self.where} cannot be trained on: " + " | ".join(errors))

    # -- wording ------------------------------------------------------------------------------
    @property
    def read(self) -> int:
        return len(self.checked) + len(self.refused)

    @property
    def described(self) -> str:
        n = len(self.checked)
        return f"{n} masks" + (f" checked (of {self.total}, evenly spread)" if self.read < self.total else "")

    def rule(self, foreground_value: float | None) -> str:
        return "every non-zero value" if foreground_value is None else f"the value {_value(foreground_value)}"

    def value_summary(self) -> str:
        """``values found: 0 (in 8 masks), 1 (in 8 masks), 16-bit`` with the most common values first."""
        seen = Counter(v for m in self.checked for v in m.counts)
        items = ", ".join(f"{_value(v)} (in {n} masks)" for v, n in seen.most_common(8))
        more = f" and {len(seen) - 8} more" if len(seen) > 8 else ""
        dtypes = sorted({m.dtype for m in self.checked})
        return f"values found: {items}{more}; stored as {', '.join(dtypes)}"

    def likely_foreground(self) -> float:
        """The most common non-zero value (the foreground of a binary mask), else the rarest value."""
        pixels: Counter[float] = Counter()
        for m in self.checked:
            pixels.update(m.counts)
        nonzero = [v for v, _ in pixels.most_common() if v != 0]
        return nonzero[0] if nonzero else pixels.most_common()[-1][0]


def _value(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _values(values: Sequence[float]) -> str:
    return "{" + ", ".join(_value(v) for v in values) + "}"


def _read_values(path: Path) -> MaskValues | tuple[Path, str]:
    try:
        return mask_values(read_mask(path), Path(path))
    except DataError as err:
        return Path(path), str(err)


def check_masks(masks: Sequence[Path], where: str, limit: int | None = MAX_CHECKED) -> MaskCheck:
    """Read ``masks`` (an evenly spread sample of ``limit`` when there are more; ``None``: all) and record
    their values; masks the reader refuses are recorded with its reason rather than raised one by one."""
    check = MaskCheck(where=where, total=len(masks))
    chosen = masks if limit is None else evenly_spread(masks, limit)
    # threads: OpenCV decodes without the GIL, so the check takes a fraction of the time on several cores
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for result in pool.map(_read_values, chosen):
            if isinstance(result, MaskValues):
                check.checked.append(result)
            else:
                check.refused.append(result)
    return check
