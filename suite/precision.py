"""Whether ``trainer.precision`` fits the hardware the run trains on.

Lightning accepts every precision on every accelerator and fails (or crawls) only once training runs:
fp16 autocast on a CPU has no fast kernels, and bf16 on a CPU without native bf16 instructions
(AVX512-BF16 / AMX on x86, the BF16 extension on ARM) is emulated and slower than fp32. These checks say
so before anything is built, naming ``trainer.precision`` and the preset to use instead.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

# Lightning's names for each precision (lightning.fabric.connector._PRECISION_INPUT), and their short forms.
ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
PRECISIONS = ("16-mixed", "16-true", "bf16-mixed", "bf16-true", "32-true", "64-true",
              "transformer-engine", "transformer-engine-float16")
FP16 = {"16-mixed", "16-true"}
BF16 = {"bf16-mixed", "bf16-true"}
GPU_ACCELERATORS = {"gpu", "cuda"}
# x86 CPU flags of native bf16 arithmetic (Cooper Lake / Sapphire Rapids / Zen 4 and later); ARM's "bf16"
X86_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


class PrecisionWarning(UserWarning):
    """A precision that runs on this hardware, but slowly."""


def normalize(precision: Any) -> str:
    """Lightning's name of ``precision`` (``16`` -> ``16-mixed``, ``bf16`` -> ``bf16-mixed``)."""
    text = str(precision).strip().lower()
    return ALIASES.get(text, text)


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags Linux lists for the first CPU (x86 ``flags``, ARM ``Features``)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes in bf16 natively. torch.backends.cpu.get_cpu_capability() only says
    "AVX512" on such CPUs, and oneDNN reports bf16 support where it emulates it, so the flags decide."""
    flags = _cpu_flags()
    if flags:
        return bool(flags & X86_BF16_FLAGS) or (platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags)
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return platform.mac_ver()[0].split(".")[0] not in ("", "11", "12", "13")  # M2 and later run macOS 14+
    return False


def uses_gpu(accelerator: Any) -> bool:
    """Whether ``trainer.accelerator`` trains on a CUDA GPU (``auto`` does when one is visible)."""
    name = str(accelerator or "auto").lower()
    if name in GPU_ACCELERATORS:
        return True
    if name != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def precision_problems(trainer_cfg: DictConfig | dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for ``trainer.precision`` on ``trainer.accelerator`` on this machine."""
    raw = trainer_cfg.get("precision", "32-true")
    if raw is None or (isinstance(raw, str) and raw.startswith("${")):
        return [], []
    precision = normalize(raw)
    accelerator = str(trainer_cfg.get("accelerator", "auto") or "auto").lower()
    if precision not in PRECISIONS:
        return [f"trainer.precision={raw}: not a precision; use one of {', '.join(PRECISIONS)} "
                "(trainer=cpu_bf16 or trainer=gpu_bf16 for bf16 mixed precision)"], []
    if accelerator == "cpu" or (accelerator == "auto" and not uses_gpu(accelerator)):
        return _cpu_problems(raw, precision)
    if uses_gpu(accelerator) and precision in BF16:
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name()
            return [], [f"trainer.precision={raw}: {name} has no native bf16 (compute capability below 8.0), "
                        "so bf16 is emulated and slow; use trainer=gpu (16-mixed) on it"]
    return [], []


def _cpu_problems(raw: Any, precision: str) -> tuple[list[str], list[str]]:
    if precision in FP16:
        return [f"trainer.precision={raw} on a CPU: fp16 has no fast CPU kernels (and mixed fp16 needs a "
                "gradient scaler made for GPUs); use trainer=cpu_bf16 (bf16-mixed) on a CPU with native bf16, "
                "else trainer.precision=32-true, or train on a GPU (trainer=gpu)"], []
    if precision.startswith("transformer-engine"):
        return [f"trainer.precision={raw} needs an NVIDIA GPU (Transformer Engine); on a CPU use "
                "trainer=cpu_bf16 or trainer.precision=32-true"], []
    if precision in BF16 and not cpu_has_native_bf16():
        return [], [f"trainer.precision={raw}: this CPU has no native bf16 instructions (avx512_bf16/amx_bf16), "
                    "so bf16 is emulated and slower than fp32; use trainer=cpu (32-true) here"]
    return [], []


def precision_errors(cfg: DictConfig) -> list[str]:
    """The errors of :func:`precision_problems` for ``cfg.trainer``; its warnings are issued as
    :class:`PrecisionWarning` (a run that is slow, not wrong, still starts)."""
    trainer_cfg = cfg.get("trainer")
    if not isinstance(trainer_cfg, DictConfig):
        return []
    errors, notes = precision_problems(trainer_cfg)
    for note in notes:
        warnings.warn(note, PrecisionWarning, stacklevel=2)
    return errors
