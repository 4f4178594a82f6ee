"""ONNX export of any task's networks, with the parity of ONNX Runtime against PyTorch: the export bundle.

One mechanism for every task. A task module says what to export through its inference hooks
(``export_graphs``, ``export_inputs``, ``inference_options``, see ``suite/inference.py``); this module
turns them into a bundle folder (``<run dir>/export/`` by default), written as a unit:

- ``<graph>.onnx`` per :class:`~suite.inference.ExportGraph` (raw RGB 0-255 in, the task's scores out);
- ``preprocessing.json``: the bundle manifest (:func:`suite.inference.bundle_metadata`) the predictors read;
- ``parity.json``: ONNX Runtime against PyTorch on the same inputs (test-split items when there are some),
  per graph and output, plus the per-item latency of both at one thread;
- ``spec.json``: the data spec of the checkpoint (class names, input, sources, split sizes).

:func:`export_module` exports a module in memory (the ``OnnxExport`` callback calls it after the final
test); :func:`export_run` exports a finished run's checkpoint later.

The exporter is ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter): it exports every
network of the suite, the BiLSTMs included, at opset 11 (the LEGO seed's opset, the lowest at which the
bilinear resizes and the LSTMs keep PyTorch's numerics: at 9 and 10 they differ by 1e-3), in seconds. The
dynamo exporter writes opset 18 whatever it is asked, fails on the BiLSTMs at 17, and takes 3-5 times longer.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from suite.errors import UserError
from suite.inference import PARITY_JSON, PREPROCESSING_JSON, ExportGraph, bundle_metadata

#: the ONNX opset written unless told otherwise (see the module docstring)
DEFAULT_OPSET = 11
#: lowest opset at which every network of the suite exports with PyTorch's numerics
MIN_OPSET = 11
#: test items compared between ONNX Runtime and PyTorch, per graph
DEFAULT_PARITY_ITEMS = 32
SPEC_JSON = "spec.json"
EXPORT_KIND = "export"
PARITY_FORMAT = 1
EXPORTER = "torch.onnx.export (TorchScript exporter, dynamo=False)"


class ParityError(UserError):
    """The exported graphs disagree with PyTorch beyond the tolerance (raised only when asked: ``strict``)."""


@dataclass(frozen=True)
class Tolerance:
    """When a graph passes: every output within ``max_abs_diff`` of PyTorch and agreeing on at least
    ``min_agreement`` of the decisions (top-1 class, thresholded score, or mask IoU)."""

    max_abs_diff: float = 1e-3
    min_agreement: float = 0.99


# -- collecting parity inputs ------------------------------------------------------------------------
class ParityInputs:
    """Up to ``limit`` items per graph of raw inputs, gathered batch by batch through ``module.export_inputs``.

    Tensors are copied to the CPU outside inference mode: the test loop runs under ``torch.inference_mode``
    and the exporter cannot trace inference tensors.
    """

    def __init__(self, limit: int = DEFAULT_PARITY_ITEMS):
        if limit < 1:
            raise UserError(f"parity_items must be at least 1, got {limit}")
        self.limit = limit
        self.inputs: dict[str, list[Any]] = {}

    def count(self, graph: str) -> int:
        return sum(int(t.shape[0]) for t in self.inputs.get(graph, []))

    @property
    def full(self) -> bool:
        return bool(self.inputs) and all(self.count(g) >= self.limit for g in self.inputs)

    def add(self, module: Any, batch: Any) -> None:
        import torch

        if self.full:
            return
        with torch.inference_mode(False), torch.no_grad():
            for graph, tensor in module.export_inputs(batch).items():
                room = self.limit - self.count(graph)
                if room > 0:
                    self.inputs.setdefault(graph, []).append(tensor[:room].detach().to("cpu", torch.float32).clone())


# -- export and parity ---------------------------------------------------------------------------------
def _axis_name(axis: int) -> str:
    return "batch" if axis == 0 else f"axis{axis}"


def _outputs(result: Any) -> tuple[Any, ...]:
    return tuple(result) if isinstance(result, tuple | list) else (result,)


def export_graph(graph: ExportGraph, network: Any, path: Path, opset: int) -> None:
    """Write one graph to ``path``. Output axes that follow a dynamic input axis (the batch, and the
    height and width of a fully convolutional net) are dynamic too: an output axis is taken to follow an
    input axis when the example gives both the same size."""
    import onnx
    import torch

    example = graph.example.detach().to("cpu", torch.float32)
    with torch.no_grad():
        outs = _outputs(network(example))
    if len(outs) != len(graph.output_names):
        raise UserError(f"export graph '{graph.name}' names {len(graph.output_names)} output(s) "
                        f"{list(graph.output_names)} but its network returns {len(outs)}")
    dynamic = {graph.input_name: {a: _axis_name(a) for a in graph.dynamic_axes}}
    for name, out in zip(graph.output_names, outs, strict=True):
        dynamic[name] = {a: _axis_name(a) for a in graph.dynamic_axes
                         if a < out.dim() and out.shape[a] == example.shape[a]}
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which cannot export the BiLSTMs here
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(network, (example,), str(path), input_names=[graph.input_name],
                          output_names=list(graph.output_names), dynamic_axes=dynamic, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(path))


def _agreement_kind(shape: Sequence[int]) -> str:
    if len(shape) >= 3:
        return "mask_iou"  # score maps: IoU of the thresholded masks
    if len(shape) == 2 and shape[1] > 1:
        return "top1"
    return "threshold"  # one score per item


class _OutputParity:
    """Running figures of one output over the parity batches."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.kind = ""
        self.max_abs = 0.0
        self.abs_sum = 0.0
        self.values = 0
        self.agree = 0
        self.decisions = 0
        self.intersection = 0
        self.union = 0

    def update(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise UserError(f"ONNX Runtime gave shape {got.shape} where PyTorch gave {ref.shape}")
        self.kind = self.kind or _agreement_kind(ref.shape)
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.abs_sum += float(diff.sum())
        self.values += diff.size
        if self.kind == "top1":
            same = ref.argmax(1) == got.argmax(1)
        else:
            a, b = ref > self.threshold, got > self.threshold
            same = a == b
            self.intersection += int((a & b).sum())
            self.union += int((a | b).sum())
        self.agree += int(same.sum())
        self.decisions += same.size

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_abs_diff": self.max_abs,
                               "mean_abs_diff": self.abs_sum / max(self.values, 1),
                               "agreement_kind": self.kind}
        decision = self.agree / max(self.decisions, 1)
        if self.kind == "mask_iou":
            out["pixel_agreement"] = decision
            out["threshold"] = self.threshold
            # two empty masks agree completely
            out["agreement"] = self.intersection / self.union if self.union else 1.0
        else:
            if self.kind == "threshold":
                out["threshold"] = self.threshold
            out["agreement"] = decision
        return out


def ort_session(path: Path, threads: int) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (the export's checks and ``export.py``'s)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no shape warnings on stderr
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(fn: Any, runs: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def _latency(network: Any, path: Path, item: Any, input_name: str, runs: int) -> dict[str, Any]:
    """Median ms per item (batch 1) of PyTorch eager and ONNX Runtime, both at one thread."""
    import torch

    saved = torch.get_num_threads()
    session = ort_session(path, threads=1)
    feed = {input_name: item.numpy()}
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            torch_ms = round(median_ms(lambda: network(item), runs), 3)
        ort_ms = round(median_ms(lambda: session.run(None, feed), runs), 3)
    finally:
        torch.set_num_threads(saved)
    return {"unit": "median ms per item, batch 1, 1 thread", "runs": runs, "input_shape": list(item.shape),
            "torch": torch_ms, "onnxruntime": ort_ms}


def check_parity(graph: ExportGraph, network: Any, path: Path, batches: Sequence[Any], threshold: float,
                 tolerance: Tolerance) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on ``batches`` (raw inputs of ``graph``), output by output."""
    import torch

    session = ort_session(path, threads=0)  # every core: parity on large images takes long at one thread
    names = [o.name for o in session.get_outputs()]
    figures = {name: _OutputParity(threshold) for name in graph.output_names}
    for batch in batches:
        with torch.no_grad():
            reference = [o.float().numpy() for o in _outputs(network(batch))]
        got = dict(zip(names, session.run(None, {graph.input_name: batch.numpy()}), strict=True))
        for name, ref in zip(graph.output_names, reference, strict=True):
            try:
                figures[name].update(ref, got[name])
            except UserError as err:
                raise UserError(f"export graph '{graph.name}', output '{name}': {err}") from None
    outputs = {name: f.result() for name, f in figures.items()}
    passed = all(o["max_abs_diff"] <= tolerance.max_abs_diff and o["agreement"] >= tolerance.min_agreement
                 for o in outputs.values())
    return {"outputs": outputs, "passed": passed}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_module(module: Any, out_dir: str | Path, parity_inputs: Mapping[str, Sequence[Any]] | None = None,
                  opset: int = DEFAULT_OPSET, *, checkpoint: str | Path | None = None,
                  parity_source: str = "test split", no_data_reason: str | None = None, latency_runs: int = 10,
                  tolerance: Tolerance = Tolerance(), strict: bool = False) -> dict[str, Any]:
    """Export ``module``'s graphs with their parity to ``out_dir``, written as a unit; returns parity.json.

    ``parity_inputs`` maps a graph name to batches of its raw input (``module.export_inputs``); a graph
    without any is checked on its example instead, and parity.json says so (with ``no_data_reason``).
    ``latency_runs`` > 0 times one item through PyTorch and ONNX Runtime at one thread. With ``strict`` a graph outside
    ``tolerance`` raises :class:`ParityError` and nothing is written; otherwise parity.json records
    ``passed: false`` and the bundle is written (the figures say how far it is off).
    An existing bundle at ``out_dir`` is replaced as a whole; any other non-empty folder is refused.
    """
    import torch

    from suite.io import atomic_write_json
    from suite.outputs import output_folder

    if opset < MIN_OPSET:
        raise UserError(f"opset {opset}: the suite's networks export with PyTorch's numerics from opset "
                        f"{MIN_OPSET} on; give opset >= {MIN_OPSET}")
    if module.spec is None:
        raise UserError(f"{type(module).__name__} has no data spec: configure it (or load a checkpoint) first")
    graphs = module.export_graphs()
    options = module.inference_options()
    threshold = float(options.get("threshold", 0.5))
    parity: dict[str, Any] = {
        "format": PARITY_FORMAT, "passed": True, "opset": opset, "exporter": EXPORTER, "versions": _versions(),
        "checkpoint": str(checkpoint) if checkpoint else None, "tolerance": asdict(tolerance), "graphs": {},
    }
    out = Path(out_dir)
    with output_folder(out, kind=EXPORT_KIND, option="export folder", replace=True,
                       record={"checkpoint": parity["checkpoint"], "opset": opset}) as partial, \
            torch.inference_mode(False):
        for graph in graphs:
            # a CPU copy: the module may be on a GPU, in training, or still used by the trainer
            network = copy.deepcopy(graph.network).to("cpu", torch.float32).eval()
            path = partial / graph.file
            export_graph(graph, network, path, opset)
            batches = list((parity_inputs or {}).get(graph.name) or [])
            source = parity_source
            if not batches:
                batches = [graph.example.detach().to("cpu", torch.float32)]
                reason = no_data_reason or "no test items were given"
                source = f"graph example ({reason}): the figures compare a synthetic input, not data"
            result = {"file": graph.file, "inputs": source, "items": sum(int(b.shape[0]) for b in batches),
                      "batches": len(batches),
                      **check_parity(graph, network, path, batches, threshold, tolerance)}
            if latency_runs > 0:
                result["latency"] = _latency(network, path, batches[0][:1], graph.input_name, latency_runs)
            parity["graphs"][graph.name] = result
        parity["passed"] = all(g["passed"] for g in parity["graphs"].values())
        if strict and not parity["passed"]:
            failing = [n for n, g in parity["graphs"].items() if not g["passed"]]
            raise ParityError(f"the ONNX export of {failing} disagrees with PyTorch beyond {asdict(tolerance)}: "
                              f"{ {n: parity['graphs'][n]['outputs'] for n in failing} }")
        atomic_write_json(partial / PREPROCESSING_JSON, bundle_metadata(module.spec, graphs, options))
        atomic_write_json(partial / SPEC_JSON, module.spec.to_dict())
        atomic_write_json(partial / PARITY_JSON, parity)
    return parity


# -- a finished run ------------------------------------------------------------------------------------
def split_inputs(module: Any, cfg: Any, limit: int) -> tuple[dict[str, list[Any]] | None, str]:
    """Parity inputs from the run's test split (its config's data), and where they came from; ``None``
    and the reason when the run's data cannot be read here (moved, another machine)."""
    from suite.training import instantiate

    try:
        datamodule = instantiate(cfg.data, key="data")
        datamodule.prepare_data()
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
        collected = ParityInputs(limit)
        for batch in loader:
            collected.add(module, batch)
            if collected.full:
                break
    except UserError as err:
        return None, f"the run's test split could not be read ({err})"
    if not collected.inputs:
        return None, "the run's test split is empty"
    return collected.inputs, "test split"


def export_run(run_dir: str | Path, ckpt: str = "best", out: str | Path | None = None,
               opset: int = DEFAULT_OPSET, parity_items: int = DEFAULT_PARITY_ITEMS,
               overrides: Sequence[str] = (), *, latency_runs: int = 10, tolerance: Tolerance = Tolerance(),
               strict: bool = False) -> dict[str, Any]:
    """Export a finished run's checkpoint (``best``, ``last`` or a file) to ``out`` (default
    ``<run dir>/export``): the module comes from the checkpoint (no data read), the parity inputs from
    the run's test split (``overrides`` such as ``data.root=<dir>`` point at a moved copy); when the data
    cannot be read the graphs' examples stand in and parity.json says why. Returns parity.json's content
    plus ``bundle`` (the folder written)."""
    from suite.inference import load_trained_module
    from suite.run_dir import RunDir

    run = RunDir(Path(run_dir))
    module, cfg, ckpt_path = load_trained_module(run, ckpt, overrides)
    inputs, source = split_inputs(module, cfg, parity_items)
    target = Path(out).expanduser() if out else run.export_dir
    parity = export_module(module, target, inputs, opset, checkpoint=ckpt_path, parity_source=source,
                           no_data_reason=None if inputs else source, latency_runs=latency_runs,
                           tolerance=tolerance, strict=strict)
    return {**parity, "bundle": str(target)}
