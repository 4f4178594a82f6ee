"""Export a trained run (any task) to ONNX; a LEGO run also gets int8 models and the Raspberry Pi bundle.

    python export.py <run dir> [--ckpt best|last|<file>] [--out DIR] [opset=11] [parity_images=256]
                     [latency_runs=50] [quant=auto|none|<recipe>,...] [calib_images=256] [threads=1,4]
                     [require_int8=false] [data.<key>=...]
    make export-pi RUN=<run dir> [ARGS='k=v ...']

Keys without a dot are export options (``ExportOptions``); dotted keys override the run's config
(e.g. ``data.root=<dir>`` to read another copy of the data). The first spelling,
``python export.py run_dir=<run dir> checkpoint=last out=<dir>``, still works and prints the new one.

Writes ``<run>/export/`` (or ``--out``) as a unit (a ``.partial`` folder renamed at the end, so a failed
export leaves the earlier one whole): the task's bundle from ``suite.exporting`` (``<graph>.onnx``,
``preprocessing.json``, ``parity.json``, ``spec.json``), which ``predict.py`` and the service read. A LEGO
run adds ``int8/`` (``lego_classifier_fp32.onnx``: the logits graph, input ``image``, outputs
``part_logits``/``color_logits``; ``<recipe>.onnx``: ONNX Runtime static quantization calibrated on training
images; ``parity.json`` and ``latency.json``) and ``pi_bundle/`` (models/lego_classifier.onnx = the fastest
int8 recipe that keeps the top-1 agreement, else fp32; config/part_names.json, color_names.json,
preprocessing.json; the predictor).
Exit codes: 0 when the fp32 graphs match PyTorch (for LEGO with an int8 model, or with a loud note that
int8 was not shipped); 2 for a bad option, an fp32 graph that disagrees with PyTorch, or no int8 model
under ``require_int8=true``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from suite.errors import ConfigError, UserError, run_guarded
from suite.exporting import median_ms, ort_session
from suite.run_dir import RunDir, parse_overrides

# Opsets as suite.exporting writes them: 11 by default (the seed's), the lowest at which the suite's networks
# keep PyTorch's numerics. Below 18 the graphs go through the TorchScript exporter: torch 2.14's dynamo exporter
# writes 18 and up (asked for less it fails to convert down and keeps 18). Per-channel int8 needs opset 13's
# QuantizeLinear axis: an older graph is converted up to 13 before quantization (the fp32 models keep theirs).
MIN_OPSET = 11
DEFAULT_OPSET = 11
DYNAMO_MIN_OPSET = 18
QUANT_MIN_OPSET = 13
# the layer groups a recipe may keep in fp32 (see layer_groups)
LAYER_GROUPS = ("stem", "heads", "se", "depthwise")
CALIBRATIONS = ("minmax", "minmax_ma", "percentile", "entropy")


@dataclass(frozen=True)
class Int8Recipe:
    """One int8 recipe: ``onnxruntime.quantization.quantize_static`` settings and the layers kept in fp32."""

    format: str = "QDQ"  # QDQ (what ORT recommends on CPU) or QOperator
    per_channel: bool = True  # one weight scale per output channel: depthwise convs need it
    calibration: str = "minmax_ma"  # moving-average min/max: the best agreement measured (docs/lego.md)
    keep_fp32: tuple[str, ...] = ()  # LAYER_GROUPS left unquantized
    ops: tuple[str, ...] | None = None  # None: every op ONNX Runtime can quantize
    symmetric_activations: bool = False  # int8 activations with zero point 0 (the Arm/NNAPI convention)


RECIPES: dict[str, Int8Recipe] = {
    # the earlier recipes, kept for comparison: moving-average min/max, everything quantized
    "qdq_tensor": Int8Recipe(per_channel=False, calibration="minmax_ma"),
    "qdq_channel": Int8Recipe(calibration="minmax_ma"),
    "qoperator_channel": Int8Recipe(format="QOperator", calibration="minmax_ma"),
    # the layers int8 hurts most kept in fp32: the first conv (it sees the raw image), the squeeze-excite
    # gates (a sigmoid scaling whole channels) and the classifier heads (they make the logits)
    "qdq_channel_keep_sensitive": Int8Recipe(calibration="minmax_ma", keep_fp32=("stem", "se", "heads")),
    "qdq_channel_keep_stem_heads": Int8Recipe(calibration="minmax_ma", keep_fp32=("stem", "heads")),
    # measured and left out of quant=auto (docs/lego.md): activations clipped at the 99.999th percentile lost
    # agreement against min/max; int8 activations with zero point 0 lost more and ran 7x slower on x86
    "qdq_channel_percentile": Int8Recipe(calibration="percentile"),
    "qdq_channel_symmetric": Int8Recipe(calibration="percentile", symmetric_activations=True),
}
#: the recipes quant=auto tries
AUTO_RECIPES = ("qdq_tensor", "qdq_channel", "qoperator_channel", "qdq_channel_keep_sensitive",
                "qdq_channel_keep_stem_heads")


@dataclass
class ExportOptions:
    """The export's own ``key=value`` options; OmegaConf checks their types, ``validate`` their values."""

    quant: str = "auto"  # auto (AUTO_RECIPES), none (fp32 only) or recipe names separated by commas
    calib_images: int = 256
    parity_images: int = 256
    fp32_tol: float = 1e-3
    fp32_min_agreement: float = 1.0
    int8_min_agreement: float = 0.99
    latency_runs: int = 50
    threads: str = "1,4"  # thread counts timed, separated by commas
    peak_gflops: float = 90.0
    # true: no int8 model keeping int8_min_agreement is an error; false: ship fp32 and say so
    require_int8: bool = False
    calibration: str = "auto"  # auto = each recipe's own; or one of CALIBRATIONS for every recipe
    opset: int = DEFAULT_OPSET

    def validate(self) -> None:
        """Refuse impossible values before any work (ConfigError names the key)."""
        for key in ("calib_images", "parity_images", "latency_runs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"export.py: {key}={getattr(self, key)}: must be at least 1")
        for key in ("fp32_min_agreement", "int8_min_agreement"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"export.py: {key}={getattr(self, key)}: must be a fraction in [0, 1]")
        if self.fp32_tol < 0 or self.peak_gflops <= 0:
            bad = "fp32_tol" if self.fp32_tol < 0 else "peak_gflops"
            raise ConfigError(f"export.py: {bad}={getattr(self, bad)}: must be positive")
        self.thread_counts()
        self.recipes()
        if self.calibration != "auto" and self.calibration not in CALIBRATIONS:
            raise ConfigError(f"export.py: calibration={self.calibration}: choose auto or one of {CALIBRATIONS}")
        import onnx

        if not MIN_OPSET <= self.opset <= onnx.defs.onnx_opset_version():
            raise ConfigError(f"export.py: opset={self.opset}: choose {MIN_OPSET} to {onnx.defs.onnx_opset_version()} "
                              f"(torch's exporters write {MIN_OPSET} or newer, {MIN_OPSET}-{DYNAMO_MIN_OPSET - 1} "
                              "through the TorchScript exporter)")

    def thread_counts(self) -> list[int]:
        try:
            counts = [int(t) for t in str(self.threads).split(",") if t.strip()]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise ConfigError(f"export.py: threads={self.threads}: expected thread counts >= 1 separated by commas")
        return counts

    def recipes(self) -> list[str]:
        if self.quant == "auto":
            return list(AUTO_RECIPES)
        if self.quant == "none":
            return []
        names = [v.strip() for v in str(self.quant).split(",") if v.strip()]
        unknown = [v for v in names if v not in RECIPES]
        if unknown or not names:
            raise ConfigError(f"export.py: quant={self.quant}: unknown recipe(s) {unknown}; "
                              f"choose from {list(RECIPES)}, auto or none")
        return names


class ParityError(UserError):
    """The exported graph disagrees with the PyTorch model beyond the configured tolerance."""


def split_options(items: Sequence[str]) -> tuple[ExportOptions, list[str]]:
    """Export options (keys without a dot) and the run-config overrides (``data.root=...``) among ``items``."""
    import difflib

    from omegaconf import OmegaConf

    options = OmegaConf.structured(ExportOptions)
    names = [f.name for f in fields(ExportOptions)]
    run_overrides = []
    for item, override in zip(items, parse_overrides(items), strict=True):
        key = override.key_or_group
        if "." in key or override.is_add() or override.is_force_add():
            run_overrides.append(item)
            continue
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"export.py: unknown option '{key}'{hint}; options: {', '.join(names)}; "
                              "dotted keys (data.root=...) override the run's config")
        # threads=1,4 and quant=a,b read as Hydra sweeps: for these options they are comma lists
        value = ",".join(override.sweep_string_iterator()) if override.is_sweep_override() else override.value()
        if isinstance(value, list):
            value = ",".join(map(str, value))
        try:
            options[key] = value  # OmegaConf refuses require_int8=treu, latency_runs=many
        except Exception as err:  # omegaconf ValidationError: the value has the wrong type
            raise ConfigError(f"export.py: {item}: {str(err).splitlines()[0]}") from None
    result: ExportOptions = OmegaConf.to_object(options)
    result.validate()
    return result, run_overrides


# -- loading the run -----------------------------------------------------------------------------
def load_run(run_dir: str | Path | RunDir, checkpoint: str = "best",
             overrides: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """(config, datamodule set up, LegoModule with the checkpoint's weights, in eval mode)."""

    from lightning_modules.lego import checkpoint_spec
    from suite.checkpoints import load_checkpoint
    from suite.training import build_model, instantiate

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    cfg = run.config(overrides, weights_from_checkpoint=True)  # the checkpoint holds the weights
    if "lego" not in str(cfg.model.get("_target_", "")):
        raise UserError(f"{run}: export.py exports lego runs; this run trained {cfg.model.get('_target_')}")
    ckpt_path = run.checkpoint(checkpoint)
    state = load_checkpoint(ckpt_path)
    spec = checkpoint_spec(state)
    if spec is None:
        raise UserError(f"{ckpt_path} has no lego class names (not a checkpoint of a lego run)")
    datamodule = instantiate(cfg.data, key="data")
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_model(cfg)
    module.configure(spec)
    module.load_state_dict(state["state_dict"])
    module.eval()
    return cfg, datamodule, module


def stacked_images(datamodule: Any, split: str, limit: int) -> tuple[Any, list[dict[str, Any]]]:
    """Up to ``limit`` evaluation-transformed images of a split (float 0-255, N x 3 x S x S) and their items."""
    import torch

    dataset = datamodule.dataset(split, augment=False)
    n = min(limit, len(dataset))
    if n == 0:
        raise UserError(f"the {split} split has no images for the export checks")
    step = max(1, len(dataset) // n)
    indices = list(range(0, len(dataset), step))[:n]
    return torch.stack([dataset[i]["image"] for i in indices]), [dataset.items[i] for i in indices]


# -- export and quantization -----------------------------------------------------------------------
def export_onnx(net: Any, path: Path, example: Any, opset: int = DEFAULT_OPSET) -> None:
    """One-file ONNX with a dynamic batch axis. Opset >= 18: torch's dynamo exporter (no external data);
    below 18 (the seed's 11): the TorchScript exporter, the only one of torch's exporters that writes them."""
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    names = {"input_names": ["image"], "output_names": list(net.output_names)}
    if opset >= DYNAMO_MIN_OPSET:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(net, (example[:2],), str(tmp), **names, dynamic_shapes={"image": {0: batch}},
                          external_data=False, dynamo=True, verbose=False, opset_version=opset)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript export is deprecated, still shipped
            torch.onnx.export(net, (example[:2],), str(tmp), **names, dynamic_axes={"image": {0: "batch"}},
                              dynamo=False, opset_version=opset)
    tmp.replace(path)


class _Calibration:
    """onnxruntime CalibrationDataReader over a stack of training images, a few images per call."""

    def __init__(self, images: Any, batch: int = 8):
        self.images = [images[i:i + batch].numpy() for i in range(0, len(images), batch)]
        self.index = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {"image": self.images[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def layer_groups(path: Path) -> dict[str, list[str]]:
    """Node names of an ONNX classifier by LAYER_GROUPS, found from the graph's structure (any exporter):

    - ``stem``: the first Conv (it reads the normalised image, whose range no later layer has);
    - ``heads``: the Gemm/MatMul nodes (the shared FC and the part/colour heads that make the logits);
    - ``se``: squeeze-excite blocks, from the global pooling of a tensor x to the Mul that gates x;
    - ``depthwise``: Conv nodes with more than one group.
    """
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    consumers: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    groups: dict[str, list[str]] = {
        "stem": [convs[0].name] if convs else [],
        "heads": [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")],
        "depthwise": [n.name for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1],
        "se": [],
    }
    for pool in (n for n in nodes if n.op_type in ("ReduceMean", "GlobalAveragePool")):
        gated = pool.input[0]
        block, frontier = [pool], list(pool.output)
        for _ in range(8):  # SE = pool -> conv -> act -> conv -> sigmoid -> Mul(x, gate): a few nodes deep
            nxt = [c for t in frontier for c in consumers.get(t, [])]
            gate = next((c for c in nxt if c.op_type == "Mul" and gated in c.input), None)
            if gate is not None:
                groups["se"] += [n.name for n in block] + [gate.name]
                break
            block += nxt
            frontier = [o for c in nxt for o in c.output]
            if not frontier:
                break
    return groups


def _raise_opset(path: Path, opset: int) -> None:
    """Convert the model at ``path`` up to ``opset`` when it is older (per-channel QDQ needs 13's ``axis``)."""
    import onnx

    model = onnx.load(str(path))
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current < opset:
        onnx.save(onnx.version_converter.convert_version(model, opset), str(path))


@contextmanager
def _float32_safe_histograms() -> Iterator[None]:
    """Let ORT's histogram calibrators (percentile, entropy) bin a tensor whose values all lie within a few
    float32 steps of each other (a sigmoid gate near 0.5 in a little-trained network): numpy cannot cut such a
    range into 2048 float32 bins and raises "Too many bins for data range". Written here because ORT calls
    ``np.histogram(x, bins=2048)`` on float32 data itself: the range of such a tensor is widened to 2048 bins
    of 4 float32 steps, which moves its calibrated range by less than 0.1 %."""
    import types

    import numpy as np
    from onnxruntime.quantization import calibrate

    real = calibrate.np

    def histogram(a: Any, bins: Any = 10, **kwargs: Any) -> Any:
        if isinstance(bins, int) and kwargs.get("range") is None and a.size and a.dtype == np.float32:
            low, high = float(a.min()), float(a.max())
            need = bins * 4 * float(np.finfo(np.float32).eps) * max(abs(low), abs(high), 1e-30)
            if high - low < need:
                kwargs["range"] = (low, low + need)
        return np.histogram(a, bins=bins, **kwargs)

    proxy = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    proxy.histogram = histogram
    calibrate.np = proxy
    try:
        yield
    finally:
        calibrate.np = real


def quantize(fp32: Path, out: Path, recipe: str | Int8Recipe, calibration: Any, method: str | None = None) -> Path:
    """Quantize ``fp32`` with a recipe, calibrating the activations on ``calibration`` images (N x 3 x S x S)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = RECIPES[recipe] if isinstance(recipe, str) else recipe
    method = method if method and method != "auto" else spec.calibration
    if method not in CALIBRATIONS:
        raise UserError(f"calibration must be one of {CALIBRATIONS}, got '{method}'")
    unknown = set(spec.keep_fp32) - set(LAYER_GROUPS)
    if unknown:
        raise UserError(f"keep_fp32: unknown layer groups {sorted(unknown)}; choose from {LAYER_GROUPS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # ORT's pre-processing (shape inference, graph clean-up) is what its quantizer expects as input
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        _raise_opset(pre, QUANT_MIN_OPSET)
        groups = layer_groups(pre)
        exclude = sorted({n for g in spec.keep_fp32 for n in groups[g]})
        calibrate_method = {"minmax": CalibrationMethod.MinMax, "minmax_ma": CalibrationMethod.MinMax,
                            "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
        extra: dict[str, Any] = {"CalibMovingAverage": True} if method == "minmax_ma" else {}
        if method == "percentile":
            # ORT's percentile histogram holds |x|: its asymmetric range starts at a positive |x| edge and so
            # cuts every negative value to 0 (the signed outputs of the projection convs); symmetric keeps them
            extra["CalibTensorRangeSymmetric"] = True
        if spec.symmetric_activations:
            extra["ActivationSymmetric"] = True
        CalibrationDataReader.register(_Calibration)
        with _float32_safe_histograms():
            quantize_static(
                str(pre), str(out), _Calibration(calibration),
                quant_format=QuantFormat.QDQ if spec.format == "QDQ" else QuantFormat.QOperator,
                per_channel=spec.per_channel, op_types_to_quantize=list(spec.ops) if spec.ops else None,
                nodes_to_exclude=exclude,
                activation_type=QuantType.QInt8 if spec.symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=calibrate_method, extra_options=extra,
            )
    return out


def run_onnx(path: Path, images: Any, threads: int = 2, batch: int = 32) -> dict[str, Any]:
    import numpy as np

    sess = ort_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    chunks: dict[str, list[Any]] = {n: [] for n in names}
    for start in range(0, len(images), batch):
        outs = sess.run(None, {"image": images[start:start + batch].numpy()})
        for name, out in zip(names, outs, strict=True):
            chunks[name].append(out)
    return {n: np.concatenate(v) for n, v in chunks.items()}


def run_torch(net: Any, images: Any) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        outs = net(images)
    return {name: out.numpy() for name, out in zip(net.output_names, outs, strict=True)}


def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, dict[str, float]]:
    import numpy as np

    out = {}
    for name, ref in reference.items():
        if name not in other:
            raise ParityError(f"the ONNX graph has no output '{name}' (it has {sorted(other)})")
        got = other[name]
        out[name] = {"max_abs_diff": float(np.abs(ref - got).max()),
                     "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
    return out


def accuracy(outputs: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, float | None]:
    import numpy as np

    out: dict[str, float | None] = {}
    for name, key in (("part_logits", "part_idx"), ("color_logits", "color_idx")):
        if name not in outputs:
            continue
        target = np.array([it[key] for it in items])
        known = target >= 0
        out[name] = float((outputs[name].argmax(1)[known] == target[known]).mean()) if known.any() else None
    return out


# -- latency --------------------------------------------------------------------------------------
def latency(
    net: Any, models: dict[str, Path], image: Any, threads: list[int], runs: int
) -> dict[str, dict[str, float]]:
    """Median ms per image (batch 1) of torch eager fp32 and each ONNX model, per thread count."""
    import torch

    out: dict[str, dict[str, float]] = {}
    saved = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            with torch.inference_mode():
                out.setdefault("torch_fp32", {})[str(t)] = median_ms(lambda: net(image), runs, warmup=5)
            for name, path in models.items():
                sess = ort_session(path, t)
                feed = {"image": image.numpy()}
                out.setdefault(name, {})[str(t)] = median_ms(lambda s=sess, f=feed: s.run(None, f), runs, warmup=5)
    finally:
        torch.set_num_threads(saved)
    return out


def gflops_per_image(net: Any, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


# -- bundle ---------------------------------------------------------------------------------------
def write_bundle(folder: Path, model: Path, fp32: Path, part_names: list[str], color_names: list[str],
                 preprocessing: dict[str, Any]) -> Path:
    from suite.io import atomic_write_json

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "models").mkdir(parents=True)
    shutil.copyfile(model, tmp / "models" / "lego_classifier.onnx")
    if model != fp32:
        shutil.copyfile(fp32, tmp / "models" / "lego_classifier_fp32.onnx")
    atomic_write_json(tmp / "config" / "part_names.json", part_names)
    atomic_write_json(tmp / "config" / "color_names.json", color_names)
    atomic_write_json(tmp / "config" / "preprocessing.json", preprocessing)
    shutil.copyfile(Path(__file__).resolve().parent / "deploy" / "onnx_predictor.py", tmp / "lego_predictor.py")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def announce_fp32_fallback(int8: dict[str, dict[str, Any]], threshold: float, reason: str = "") -> str:
    """The loud note printed on stderr when the bundle ships the fp32 model instead of int8."""
    best = max(int8.items(), key=lambda kv: kv[1]["min_top1_agreement"], default=None)
    detail = (f"best recipe {best[0]}: {best[1]['min_top1_agreement']:.3f} top-1 agreement, "
              f"{threshold:.2f} required" if best else reason or "no int8 recipe was tried (quant=none)")
    bar = "!" * 100
    message = (f"{bar}\nINT8 NOT SHIPPED: the Pi bundle holds the fp32 model ({detail}).\n"
               "It runs correctly, only slower; pass require_int8=true to make this an error, or "
               "int8_min_agreement=<fraction> to accept a lower agreement.\n{bar}").format(bar=bar)
    print(message, file=sys.stderr, flush=True)
    return message


# -- main -----------------------------------------------------------------------------------------
def export_run(run_dir: str | Path | RunDir, ckpt: str = "best", out: str | Path | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Export ``ckpt`` of a run of any task to ``out`` (default ``<run dir>/export``): the task's bundle
    (``suite.exporting``: its graphs, preprocessing.json, parity.json, spec.json); a lego run also gets
    ``int8/`` (the logits graph, the int8 recipes, their parity and latency) and ``pi_bundle/``.
    ``overrides`` are export options (``quant=auto``) and run-config overrides (``data.root=<dir>``).

    The folder is written as a unit (``suite.outputs.output_folder``): a failure leaves the earlier export
    whole, never old reports beside new models. A failed LEGO parity check keeps its reports in
    ``<out>.failed`` for the user to read."""
    from suite import exporting
    from suite.outputs import OUTPUT_MARKER, output_folder

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    options, run_overrides = split_options(overrides)  # bad values stop here, before any loading
    out = Path(out).expanduser() if out else run.export_dir
    cfg = run.config(run_overrides, weights_from_checkpoint=True)  # not a run dir: stops here
    lego = "lego" in str(cfg.model.get("_target_", ""))
    with output_folder(out, kind=exporting.EXPORT_KIND, option="--out", replace=True,
                       record={"checkpoint": ckpt, "opset": options.opset}) as partial:
        staging = partial / "task_bundle"
        print(f"exporting {run} ({ckpt} checkpoint), opset {options.opset}", flush=True)
        result: dict[str, Any] = {"parity": exporting.export_run(
            run.path, ckpt, staging, opset=options.opset, parity_items=options.parity_images,
            overrides=run_overrides, latency_runs=options.latency_runs, strict=True,
            tolerance=exporting.Tolerance(max_abs_diff=options.fp32_tol, min_agreement=options.fp32_min_agreement))}
        (staging / OUTPUT_MARKER).unlink(missing_ok=True)
        for item in staging.iterdir():  # the task's bundle is the export folder's top level
            item.replace(partial / item.name)
        staging.rmdir()
        if lego:
            try:
                result["pi"] = _export_into(run, ckpt, partial, options, run_overrides)
            except ParityError as err:
                failed = out.with_name(out.name + ".failed")
                shutil.rmtree(failed, ignore_errors=True)
                shutil.copytree(partial, failed)
                kept = f"{out} was left as it was" if out.exists() else f"nothing was written to {out}"
                raise ParityError(f"{err}. The reports of this attempt are in {failed}; {kept}.") from None
        elif options.quant not in ("auto", "none"):
            print(f"note: quant={options.quant} ignored: int8 recipes are for lego runs")
    print(f"export: {out}")
    return {**result, "bundle": str(out)}


def _export_into(run: RunDir, ckpt: str, out: Path, options: ExportOptions,
                 run_overrides: list[str]) -> dict[str, Any]:
    from suite.io import atomic_write_json

    threads = options.thread_counts()
    print(f"loading {run} ({ckpt} checkpoint)", flush=True)
    cfg, datamodule, module = load_run(run, ckpt, run_overrides)
    net = module.net.eval()
    size = datamodule.image_size
    calib, _ = stacked_images(datamodule, "train", options.calib_images)
    images, items = stacked_images(datamodule, "test", options.parity_images)

    work = out / "int8"
    fp32 = work / "lego_classifier_fp32.onnx"
    print(f"exporting int8/lego_classifier_fp32.onnx, the logits graph for the Pi (opset {options.opset})", flush=True)
    export_onnx(net, fp32, images, opset=options.opset)
    reference = run_torch(net, images)
    fp32_cmp = compare(reference, run_onnx(fp32, images))
    fp32_ok = all(v["max_abs_diff"] <= options.fp32_tol and v["top1_agreement"] >= options.fp32_min_agreement
                  for v in fp32_cmp.values())

    int8: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for recipe in options.recipes() if fp32_ok else []:
        print(f"quantizing: {recipe}", flush=True)
        path = quantize(fp32, work / f"{recipe}.onnx", recipe, calib, options.calibration)
        paths[recipe] = path
        outputs = run_onnx(path, images)
        cmp = compare(reference, outputs)
        int8[recipe] = {"outputs": cmp, "accuracy": accuracy(outputs, items),
                        "min_top1_agreement": min(v["top1_agreement"] for v in cmp.values()),
                        "size_mb": round(path.stat().st_size / 2**20, 2),
                        "recipe": {f.name: getattr(RECIPES[recipe], f.name) for f in fields(Int8Recipe)}}

    models = {"ort_fp32": fp32, **{f"ort_int8_{v}": p for v, p in paths.items()}}
    print(f"timing {len(models) + 1} models at threads {threads}", flush=True)
    lat = latency(net, models, images[:1], threads, options.latency_runs) if fp32_ok else {}
    passing = [v for v in int8 if int8[v]["min_top1_agreement"] >= options.int8_min_agreement]
    one = str(threads[0])
    best = min(passing, key=lambda v: lat[f"ort_int8_{v}"][one]) if passing and lat else None
    gflop = gflops_per_image(net, size)
    floor_ms = gflop / options.peak_gflops * 1000
    parity = {
        "images": len(images), "split": "test", "sources": sorted({it["subset"] for it in items}),
        "thresholds": {k: getattr(options, k) for k in ("fp32_tol", "fp32_min_agreement", "int8_min_agreement")},
        "calibration": {"method": options.calibration, "images": len(calib), "split": "train"},
        "opset": options.opset,
        "fp32": {"outputs": fp32_cmp, "passed": fp32_ok},
        "int8": {"variants": int8, "chosen": best, "passed": best is not None, "shipped": best is not None},
        "accuracy": {"torch_fp32": accuracy(reference, items)},
        "passed": fp32_ok and (best is not None or not options.require_int8),
    }
    latency_report = {
        "unit": "median ms per image, batch 1", "runs": options.latency_runs, "image_size": size,
        "threads": threads, "models": lat, "gflop_per_image": round(gflop, 4),
        "compute_floor_ms_1thread": round(floor_ms, 3), "peak_gflops_1thread": options.peak_gflops,
        "fraction_of_compute_limit_1thread": {k: round(floor_ms / v["1"], 3) for k, v in lat.items() if "1" in v},
        "speedup_vs_torch_fp32_1thread": {k: round(lat["torch_fp32"]["1"] / v["1"], 2) for k, v in lat.items()
                                          if "1" in v and "torch_fp32" in lat and "1" in lat["torch_fp32"]},
        "chosen_int8": best,
    }
    atomic_write_json(work / "parity.json", parity)
    atomic_write_json(work / "latency.json", latency_report)
    _print_summary(parity, latency_report)
    if not fp32_ok:
        raise ParityError(f"the fp32 logits graph disagrees with PyTorch: {fp32_cmp} (see int8/parity.json)")
    if best is None and options.require_int8:
        raise ParityError(
            f"require_int8=true: no int8 recipe keeps {options.int8_min_agreement:.0%} top-1 agreement with "
            f"PyTorch ({ {v: r['min_top1_agreement'] for v, r in int8.items()} }); see int8/parity.json. "
            "Pass require_int8=false to ship the fp32 model"
        )
    if best is None:
        announce_fp32_fallback(int8, options.int8_min_agreement)
    shipped = paths[best] if best else fp32
    preprocessing = {
        "model": "models/lego_classifier.onnx", "input": "image", "outputs": list(net.output_names),
        "size": size, "resize": "stretch to a square", "interpolation": "linear", "color_order": "RGB",
        "dtype": "float32", "value_range": [0, 255], "layout": "NCHW",
        "normalization": "inside the model (ImageNet mean/std)", "int8_variant": best,
        "precision": "int8" if best else "fp32",
    }
    write_bundle(out / "pi_bundle", shipped, fp32, module.part_names, module.color_names, preprocessing)
    print(f"Pi bundle: pi_bundle/ (model: {'int8 ' + best if best else 'fp32'})")
    return {"parity": parity, "latency": latency_report}


def _print_summary(parity: dict[str, Any], lat: dict[str, Any]) -> None:
    print("\nint8/: parity of the logits graph vs PyTorch on", parity["images"], "test images:")
    for name, v in parity["fp32"]["outputs"].items():
        print(f"  fp32 {name}: max|diff| {v['max_abs_diff']:.2e}, top-1 agreement {v['top1_agreement']:.4f}")
    for variant, r in parity["int8"]["variants"].items():
        agree = ", ".join(f"{n} {v['top1_agreement']:.4f}" for n, v in r["outputs"].items())
        print(f"  int8 {variant}: top-1 agreement {agree}")
    print("latency (median ms, batch 1):")
    for name, per_thread in lat["models"].items():
        cells = ", ".join(f"{t} thr {ms:.2f}" for t, ms in per_thread.items())
        print(f"  {name:40s} {cells}")
    print(f"compute floor {lat['compute_floor_ms_1thread']:.2f} ms ({lat['gflop_per_image']} GFLOP at "
          f"{lat['peak_gflops_1thread']} GFLOP/s, 1 thread); chosen int8: {lat['chosen_int8']}")


def main(argv: list[str] | None = None) -> None:
    import os
    import warnings

    from suite.cli import parse_run_command

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    command = parse_run_command(sys.argv[1:] if argv is None else argv, prog="python export.py",
                                description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 1)[1],
                                overrides_help="export options (quant=auto) and run-config overrides (data.root=<dir>)",
                                accept_legacy=True)
    run_guarded(export_run, command.run, ckpt=command.ckpt, out=command.out, overrides=command.overrides,
                log_dir=command.run.path)


if __name__ == "__main__":
    main()
