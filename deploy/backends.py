"""Where a predictor's graphs run: an exported bundle under ONNX Runtime, or a run's checkpoint under PyTorch.

Both backends expose the same two things: ``meta`` (the bundle manifest, ``preprocessing.json``, see
``suite/inference.py``) and ``run(graph, array) -> {output name: array}``. A predictor never knows which
one it has, so the checkpoint and the bundle give the same answers up to the graphs' numerics.

This file imports only numpy and onnxruntime at module level: the ONNX path runs on a Raspberry Pi
without torch. ``TorchBackend`` imports torch and the suite when it is built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from suite.errors import DataError

PREPROCESSING_JSON = "preprocessing.json"


class BundleError(DataError):
    """A bundle folder is missing a file or holds one that does not match its manifest (a user error:
    the command line says so and exits 2)."""


class Backend(Protocol):
    meta: dict[str, Any]
    name: str

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]: ...


def is_bundle(path: str | Path) -> bool:
    """A folder written by the export (``preprocessing.json`` beside the ONNX graphs)."""
    return (Path(path) / PREPROCESSING_JSON).is_file()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OnnxBackend:
    """The graphs of an exported bundle, one ONNX Runtime session each (CPU)."""

    name = "onnx"

    def __init__(self, bundle_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.bundle_dir = Path(bundle_dir)
        manifest = self.bundle_dir / PREPROCESSING_JSON
        if not manifest.is_file():
            raise BundleError(f"{self.bundle_dir} is not an exported bundle: {PREPROCESSING_JSON} is missing "
                              "(export a run with: python export.py <run dir>)")
        try:
            self.meta: dict[str, Any] = json.loads(manifest.read_text())
        except ValueError as err:
            raise BundleError(f"{manifest} is not valid JSON: {err}") from None
        graphs = self.meta.get("graphs")
        if not isinstance(graphs, dict) or not graphs:
            raise BundleError(f"{manifest} lists no graphs")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions: dict[str, Any] = {}
        self.hashes: dict[str, str] = {}
        for name, graph in graphs.items():
            path = self.bundle_dir / graph["file"]
            if not path.is_file():
                raise BundleError(f"bundle graph '{name}' is missing: {path}")
            self.sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.hashes[name] = file_sha256(path)

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        spec = self.meta["graphs"][graph]
        outputs = session.run(None, {spec["input"]: np.ascontiguousarray(array, dtype=np.float32)})
        return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))


class TorchBackend:
    """The same graphs built from a run's checkpoint (``SuiteModule.export_graphs``), run by PyTorch."""

    name = "torch"

    def __init__(self, run_dir: str | Path, ckpt: str = "best", threads: int | None = None,
                 overrides: tuple[str, ...] = ()):
        import torch

        from suite.inference import bundle_metadata, load_trained_module

        if threads:
            torch.set_num_threads(threads)
        module, self.cfg, self.ckpt_path = load_trained_module(run_dir, ckpt, overrides)
        graphs = module.export_graphs()
        self.networks = {g.name: g for g in graphs}
        self.meta = bundle_metadata(module.spec, graphs, module.inference_options())
        self.hashes = {"checkpoint": file_sha256(self.ckpt_path)}

    def run(self, graph: str, array: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        spec = self.networks[graph]
        with torch.inference_mode():
            out = spec.network(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))
        outs = out if isinstance(out, tuple | list) else (out,)
        return {name: o.float().numpy() for name, o in zip(spec.output_names, outs, strict=True)}


def open_backend(source: str | Path, ckpt: str = "best", threads: int = 1,
                 overrides: tuple[str, ...] = ()) -> Backend:
    """An exported bundle (a folder with ``preprocessing.json``) or a run dir (its checkpoint)."""
    return OnnxBackend(source, threads) if is_bundle(source) else TorchBackend(source, ckpt, threads, overrides)
