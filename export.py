"""Export a trained LEGO run for the Raspberry Pi: ONNX fp32 + int8, parity and latency checks, bundle.

    python export.py <run dir> [--ckpt best|last|<file>] [--out DIR] [quant=auto|<variant>,...]
                     [calib_images=64] [parity_images=256] [latency_runs=50] [threads=1,4] [data.<key>=...]
    make export-pi RUN=<run dir> [ARGS='k=v ...']

Keys without a dot are export options (``ExportOptions``); dotted keys override the run's config
(e.g. ``data.root=<dir>`` to calibrate on another copy of the data). The first spelling,
``python export.py run_dir=<run dir> checkpoint=last out=<dir>``, still works and prints the new one.

Writes ``<run>/export/`` (or ``--out``): ``lego_classifier_fp32.onnx`` (one file, dynamic batch, input ``image``,
outputs ``part_logits``/``color_logits``), ``int8/<variant>.onnx`` (ONNX Runtime static
quantization calibrated on training images), ``parity.json`` and ``latency.json`` (atomically),
and ``pi_bundle/`` (models/lego_classifier.onnx = the fastest int8 variant that keeps top-1
agreement, else fp32; config/part_names.json, color_names.json, preprocessing.json; the predictor).
Exits non-zero when the fp32 graph disagrees with PyTorch or no int8 variant keeps the agreement.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from suite.errors import ConfigError, UserError, run_guarded
from suite.run_dir import RunDir, parse_overrides

VARIANTS: dict[str, dict[str, Any]] = {
    # name: quantize_static options. "ops" None = every op ONNX Runtime can quantize.
    "qdq_tensor": {"format": "QDQ", "per_channel": False, "ops": None},
    "qdq_channel": {"format": "QDQ", "per_channel": True, "ops": None},
    "qdq_channel_convgemm": {"format": "QDQ", "per_channel": True, "ops": ["Conv", "Gemm", "MatMul"]},
    "qoperator_channel": {"format": "QOperator", "per_channel": True, "ops": None},
    "qoperator_channel_convgemm": {"format": "QOperator", "per_channel": True, "ops": ["Conv", "Gemm", "MatMul"]},
    # depthwise convolutions stay fp32: ONNX Runtime's int8 depthwise kernels gain little over fp32
    "qdq_channel_no_depthwise": {"format": "QDQ", "per_channel": True, "ops": None, "skip_depthwise": True},
    "qoperator_channel_no_depthwise": {"format": "QOperator", "per_channel": True, "ops": None,
                                       "skip_depthwise": True},
}
# minmax_ma (per-image min/max averaged) kept the most top-1 agreement on a 96 px run of the real LEGO
# data (part 0.87 vs 0.33 for plain minmax, 0.51 percentile 99.99, 0.33 entropy; see docs/lego.md).
CALIBRATIONS = ("minmax", "minmax_ma", "percentile", "entropy")
SEED_FIELDS = ("part_logits", "color_logits")


@dataclass
class ExportOptions:
    """The export's own ``key=value`` options; OmegaConf checks their types."""

    quant: str = "auto"  # auto (every variant) or variants separated by commas
    calib_images: int = 64
    parity_images: int = 256
    fp32_tol: float = 1e-3
    fp32_min_agreement: float = 1.0
    int8_min_agreement: float = 0.99
    latency_runs: int = 50
    threads: str = "1,4"  # thread counts timed, separated by commas
    peak_gflops: float = 90.0
    require_int8: bool = True
    calibration: str = "minmax_ma"


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
            options[key] = value
        except Exception as err:  # omegaconf ValidationError: the value has the wrong type
            raise ConfigError(f"export.py: {item}: {str(err).splitlines()[0]}") from None
    return OmegaConf.to_object(options), run_overrides


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
def export_onnx(net: Any, path: Path, example: Any) -> None:
    """One-file ONNX (torch 2.14's dynamo exporter, no external data) with a dynamic batch axis."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (example[:2],), str(tmp), input_names=["image"], output_names=list(net.output_names),
                      dynamic_shapes={"image": {0: batch}}, external_data=False, dynamo=True, verbose=False)
    tmp.replace(path)


class _Calibration:
    """onnxruntime CalibrationDataReader over a stack of training images, one image per call."""

    def __init__(self, images: Any):
        self.images = [images[i:i + 1].numpy() for i in range(len(images))]
        self.index = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {"image": self.images[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def depthwise_convs(path: Path) -> list[str]:
    """Names of the Conv nodes with more than one group (depthwise) in an ONNX model."""
    import onnx

    names = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and groups > 1:
            names.append(node.name)
    return names


def quantize(fp32: Path, out: Path, variant: str, calibration: Any, method: str = "minmax_ma") -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    spec = VARIANTS[variant]
    out.parent.mkdir(parents=True, exist_ok=True)
    exclude = depthwise_convs(fp32) if spec.get("skip_depthwise") else None
    if method not in CALIBRATIONS:
        raise UserError(f"calibration must be one of {CALIBRATIONS}, got '{method}'")
    calibrate_method = {"minmax": CalibrationMethod.MinMax, "minmax_ma": CalibrationMethod.MinMax,
                        "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
    extra = {"CalibMovingAverage": True} if method == "minmax_ma" else {}
    reader = _Calibration(calibration)
    CalibrationDataReader.register(_Calibration)
    quantize_static(
        str(fp32), str(out), reader,
        quant_format=QuantFormat.QDQ if spec["format"] == "QDQ" else QuantFormat.QOperator,
        per_channel=spec["per_channel"], op_types_to_quantize=spec["ops"], nodes_to_exclude=exclude,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate_method,
        extra_options=extra,
    )
    return out


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, images: Any, threads: int = 2, batch: int = 32) -> dict[str, Any]:
    import numpy as np

    sess = session(path, threads)
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
def median_ms(fn: Any, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


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
                out.setdefault("torch_fp32", {})[str(t)] = median_ms(lambda: net(image), runs)
            for name, path in models.items():
                sess = session(path, t)
                feed = {"image": image.numpy()}
                out.setdefault(name, {})[str(t)] = median_ms(lambda s=sess, f=feed: s.run(None, f), runs)
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


# -- main -----------------------------------------------------------------------------------------
def export_run(run_dir: str | Path | RunDir, ckpt: str = "best", out: str | Path | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Export ``ckpt`` of a lego run to ``out`` (default ``<run dir>/export``); ``overrides`` are
    export options (``quant=auto``) and run-config overrides (``data.root=<dir>``)."""
    from suite.io import atomic_write_json

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    options, run_overrides = split_options(overrides)
    out = Path(out).expanduser() if out else run.export_dir
    try:
        threads = [int(t) for t in str(options.threads).split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"threads: expected thread counts separated by commas, got '{options.threads}'") from None
    print(f"loading {run} ({ckpt} checkpoint)", flush=True)
    cfg, datamodule, module = load_run(run, ckpt, run_overrides)
    net = module.net.eval()
    size = datamodule.image_size
    calib, _ = stacked_images(datamodule, "train", options.calib_images)
    images, items = stacked_images(datamodule, "test", options.parity_images)

    fp32 = out / "lego_classifier_fp32.onnx"
    print(f"exporting {fp32}", flush=True)
    export_onnx(net, fp32, images)
    reference = run_torch(net, images)
    fp32_cmp = compare(reference, run_onnx(fp32, images))
    fp32_ok = all(v["max_abs_diff"] <= options.fp32_tol and v["top1_agreement"] >= options.fp32_min_agreement
                  for v in fp32_cmp.values())

    variants = list(VARIANTS) if options.quant == "auto" else [v for v in str(options.quant).split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"quant: unknown variant(s) {unknown}; choose from {list(VARIANTS)} or auto")
    int8: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for variant in variants if fp32_ok else []:
        print(f"quantizing: {variant}", flush=True)
        path = quantize(fp32, out / "int8" / f"{variant}.onnx", variant, calib, options.calibration)
        paths[variant] = path
        outputs = run_onnx(path, images)
        cmp = compare(reference, outputs)
        int8[variant] = {"outputs": cmp, "accuracy": accuracy(outputs, items),
                         "min_top1_agreement": min(v["top1_agreement"] for v in cmp.values()),
                         "size_mb": round(path.stat().st_size / 2**20, 2)}

    models = {"ort_fp32": fp32, **{f"ort_int8_{v}": p for v, p in paths.items()}}
    print(f"timing {len(models) + 1} models at threads {threads}", flush=True)
    lat = latency(net, models, images[:1], threads, options.latency_runs) if fp32_ok else {}
    passing = [v for v in int8 if int8[v]["min_top1_agreement"] >= options.int8_min_agreement]
    one = str(threads[0]) if threads else "1"
    best = min(passing, key=lambda v: lat[f"ort_int8_{v}"][one]) if passing and lat else None
    gflop = gflops_per_image(net, size)
    floor_ms = gflop / options.peak_gflops * 1000
    parity = {
        "images": len(images), "split": "test", "sources": sorted({it["subset"] for it in items}),
        "thresholds": {k: getattr(options, k) for k in ("fp32_tol", "fp32_min_agreement", "int8_min_agreement")},
        "calibration": {"method": options.calibration, "images": len(calib), "split": "train"},
        "fp32": {"outputs": fp32_cmp, "passed": fp32_ok},
        "int8": {"variants": int8, "chosen": best, "passed": best is not None},
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
    atomic_write_json(out / "parity.json", parity)
    atomic_write_json(out / "latency.json", latency_report)
    _print_summary(parity, latency_report)
    if not fp32_ok:
        raise ParityError(f"the fp32 ONNX graph disagrees with PyTorch: {fp32_cmp} (see {out / 'parity.json'})")
    if best is None and options.require_int8:
        raise ParityError(
            f"no int8 variant keeps {options.int8_min_agreement:.0%} top-1 agreement with PyTorch "
            f"({ {v: r['min_top1_agreement'] for v, r in int8.items()} }); see {out / 'parity.json'}. "
            "Pass require_int8=false to ship the fp32 model."
        )
    shipped = paths[best] if best else fp32
    preprocessing = {
        "model": "models/lego_classifier.onnx", "input": "image", "outputs": list(net.output_names),
        "size": size, "resize": "stretch to a square", "interpolation": "linear", "color_order": "RGB",
        "dtype": "float32", "value_range": [0, 255], "layout": "NCHW",
        "normalization": "inside the model (ImageNet mean/std)", "int8_variant": best,
    }
    bundle = write_bundle(out / "pi_bundle", shipped, fp32, module.part_names, module.color_names, preprocessing)
    print(f"Pi bundle: {bundle} (model: {'int8 ' + best if best else 'fp32'})")
    return {"parity": parity, "latency": latency_report, "bundle": str(bundle)}


def _print_summary(parity: dict[str, Any], lat: dict[str, Any]) -> None:
    print("\nparity vs PyTorch on", parity["images"], "test images:")
    for name, v in parity["fp32"]["outputs"].items():
        print(f"  fp32 {name}: max|diff| {v['max_abs_diff']:.2e}, top-1 agreement {v['top1_agreement']:.4f}")
    for variant, r in parity["int8"]["variants"].items():
        agree = ", ".join(f"{n} {v['top1_agreement']:.4f}" for n, v in r["outputs"].items())
        print(f"  int8 {variant}: top-1 agreement {agree}")
    print("latency (median ms, batch 1):")
    for name, per_thread in lat["models"].items():
        cells = ", ".join(f"{t} thr {ms:.2f}" for t, ms in per_thread.items())
        print(f"  {name:34s} {cells}")
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
