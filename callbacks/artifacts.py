"""Files a task module wants in the run dir (name maps, confused pairs, phase weights, pictures).

A module never writes files: it returns them from ``artifacts(stage)`` as ``{relative path: content}``
and this callback writes them on rank zero, atomically, into the run dir, after ``fit`` (stage
``"fit"``) and after ``test`` (stage ``"test"``). The file's suffix says how the content is written:

- ``.json``: any JSON-able object; ``.csv``: a list of flat dicts (rows);
- ``.pth``/``.pt``: a state dict (or any object ``torch.save`` takes);
- ``.png``/``.jpg``: an ``H x W x 3`` uint8 RGB array.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L

from suite.io import atomic_write_bytes, atomic_write_csv, atomic_write_json


def write_artifact(path: Path, content: Any) -> Path:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return atomic_write_json(path, content)
    if suffix == ".csv":
        return atomic_write_csv(path, list(content))
    if suffix in (".pth", ".pt"):
        import torch

        buffer = io.BytesIO()
        torch.save(content, buffer)
        return atomic_write_bytes(path, buffer.getvalue())
    if suffix in (".png", ".jpg", ".jpeg"):
        import cv2

        ok, encoded = cv2.imencode(suffix, content[..., ::-1])  # RGB in, OpenCV writes BGR
        if not ok:
            raise ValueError(f"could not encode {path.name}")
        return atomic_write_bytes(path, encoded.tobytes())
    raise ValueError(f"artifact {path.name}: no writer for '{suffix}' files (json, csv, pth, png, jpg)")


class ArtifactWriter(L.Callback):
    """Writes the module's ``artifacts("fit")`` after fitting and ``artifacts("test")`` after testing."""

    def __init__(self, folder: str | None = None):
        self.folder = folder
        self.written: list[Path] = []

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        files = pl_module.artifacts(stage)
        if not trainer.is_global_zero or not files:
            return
        root = Path(self.folder or trainer.default_root_dir)
        for name, content in files.items():
            self.written.append(write_artifact(root / name, content))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")
