"""What every task's predictor shares: finding the inputs, the loop with a progress bar, and the outputs.

A task predictor (``deploy/predictors/<task>.py``) subclasses :class:`Predictor` and implements:

- ``discover(paths)``: the items to predict among the user's paths (files, folders, videos ...),
  raising :class:`~suite.errors.DataError` naming the path when a path holds nothing usable;
- ``predict_item(item)``: an :class:`ItemResult` (one or more ``PredictionRow`` and optional pictures);
- ``predict_bytes(data, filename)``: the service's answer for one upload (JSON-able dict);
- ``summary(rows)`` (optional): task figures for ``summary.json`` (foreground fraction, alert count ...).

Everything model-related goes through ``self.backend.run(graph, array)`` and ``self.meta`` (the bundle
manifest), never through torch, so the same predictor runs a checkpoint or an ONNX bundle.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from suite.contracts import PredictionRow
from suite.errors import ConfigError, DataError


@dataclass
class ItemResult:
    """What one input gave: its prediction rows and pictures (file name -> RGB uint8 array)."""

    rows: list[PredictionRow]
    pictures: dict[str, np.ndarray] = field(default_factory=dict)


class Predictor:
    """Base of the task predictors; ``options`` are the user's ``key=value`` settings, checked against
    :attr:`defaults` (an unknown key is a ConfigError naming it)."""

    task: ClassVar[str] = ""
    #: the options a user may set on the command line, with their defaults
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, backend: Any, options: dict[str, Any] | None = None):
        self.backend = backend
        self.meta: dict[str, Any] = backend.meta
        self.options = self._options(options or {})

    def _options(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigError(f"unknown {self.task} predict option(s) {unknown}; options: {known}")
        out = dict(self.defaults)
        for key, value in given.items():
            out[key] = _typed_option(key, value, self.defaults[key])
        return out

    # -- the task's part -----------------------------------------------------------------------------
    def discover(self, paths: Sequence[Path]) -> list[Any]:
        raise NotImplementedError

    def predict_item(self, item: Any) -> ItemResult:
        raise NotImplementedError

    def predict_bytes(self, data: bytes, filename: str) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self, rows: list[PredictionRow]) -> dict[str, Any]:
        return {}

    # -- shared --------------------------------------------------------------------------------------
    def class_names(self, head: str | None = None) -> list[str]:
        heads = self.meta["heads"]
        chosen = heads[0] if head is None else next((h for h in heads if h["name"] == head), None)
        if chosen is None:
            raise DataError(f"the bundle has no head '{head}'")
        return list(chosen["classes"])

    def run(self, paths: Sequence[str | Path], out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
        """Predict every item under ``paths`` and write ``out_dir`` as a unit (a temporary folder renamed
        at the end): ``predictions.csv``, ``pictures/``, ``summary.json``. Returns the summary."""
        from suite.io import atomic_write_csv, atomic_write_json

        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            raise DataError(f"output folder {out} exists and is not empty: give a new --out")
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise DataError(f"input not found: {', '.join(missing)}")
        items = self.discover([Path(p) for p in paths])
        if not items:
            raise DataError(f"no {self.task} inputs found under {', '.join(map(str, paths))}")
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "pictures").mkdir(parents=True)
        rows: list[PredictionRow] = []
        start = time.perf_counter()
        try:
            for item in _progress(items, progress, desc=f"predict {self.task}"):
                result = self.predict_item(item)
                rows.extend(result.rows)
                for name, image in result.pictures.items():
                    _write_png(tmp / "pictures" / name, image)
            seconds = time.perf_counter() - start
            records = [r.as_record() for r in rows]
            atomic_write_csv(tmp / "predictions.csv", records)
            summary = {"task": self.task, "backend": self.backend.name, "items": len(items), "rows": len(rows),
                       "seconds": round(seconds, 3), "ms_per_item": round(1000 * seconds / len(items), 2),
                       "model": getattr(self.backend, "hashes", {}), "options": self.options,
                       **self.summary(rows)}
            atomic_write_json(tmp / "summary.json", summary)
            if not any((tmp / "pictures").iterdir()):
                (tmp / "pictures").rmdir()
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists():
                out.rmdir()  # empty (checked above)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return summary


def find_videos(paths: Sequence[Path]) -> list[Path]:
    """The video files among ``paths`` and under its folders; a path with none is a DataError naming it."""
    from datamodules.video import VIDEO_EXTENSIONS, list_videos

    items: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_videos(path)
            if not found:
                raise DataError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {path}")
            items += found
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            items.append(path)
        else:
            raise DataError(f"{path} is not a video ({', '.join(VIDEO_EXTENSIONS)}) or a folder of videos")
    return items


@contextmanager
def uploaded_video(data: bytes, filename: str) -> Iterator[Path]:
    """An uploaded video's bytes as a temporary file with the upload's suffix (the decoders read files),
    removed afterwards; a name without a video suffix is a DataError."""
    from datamodules.video import VIDEO_EXTENSIONS

    suffix = Path(filename).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        raise DataError(f"{filename}: not a video ({', '.join(VIDEO_EXTENSIONS)})")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        yield path


def find_images(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """``(image, item id)`` pairs: a file is its own name, a folder's images (searched recursively, hidden
    folders skipped) are named relative to it; when two inputs give one name, full paths keep rows apart."""
    from datamodules.images import IMAGE_EXTENSIONS

    items: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"{path}: not an image ({', '.join(IMAGE_EXTENSIONS)} expected)")
            items.append((path, path.name))
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise DataError(f"no images under {path} ({', '.join(IMAGE_EXTENSIONS)})")
        items.extend((p, str(p.relative_to(path))) for p in found)
    if len({i for _, i in items}) < len(items):
        items = [(p, str(p)) for p, _ in items]
    return items


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _typed_option(key: str, value: Any, default: Any) -> Any:
    """``value`` (a command-line string, or a value from Python) as the type of the option's default.

    Booleans are read by their words: ``bool("false")`` is True, which would flip a switch the user turned off.
    """
    if default is None or isinstance(value, type(default)) and not (isinstance(default, int | float)
                                                                    and isinstance(value, bool)):
        return value
    expected = type(default).__name__
    if isinstance(default, bool):
        word = str(value).strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(f"predict option {key}={value!r}: expected true or false")
    if isinstance(value, bool):
        raise ConfigError(f"predict option {key}={value!r}: expected {expected}")
    try:
        converted = type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"predict option {key}={value!r}: expected {expected}") from None
    if isinstance(converted, float) and converted != converted:  # nan passes float(); no option means it
        raise ConfigError(f"predict option {key}={value!r}: expected a number")
    return converted


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise DataError(f"cannot write {path}")
