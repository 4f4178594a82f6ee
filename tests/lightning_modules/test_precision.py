"""bf16 mixed precision and model.compile: the hardware checks of suite.precision, every task training under
bf16-mixed on a CPU with finite fp32 losses, and compiled networks whose checkpoints load and export plain."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lightning_modules.base import SuiteModule, compile_options
from lightning_modules.losses import CombinedSegmentationLoss, FocalLoss
from lightning_modules.multitask_loss import MultiTaskLoss
from lightning_modules.nets.violence import RecurrentDropoutBiLSTM
from suite import precision
from suite.config_check import validate_config
from suite.errors import ConfigError
from suite.training import train


# -- suite.precision ------------------------------------------------------------------------------------
def _problems(value: object, accelerator: str = "cpu") -> tuple[list[str], list[str]]:
    return precision.precision_problems(OmegaConf.create({"precision": value, "accelerator": accelerator}))


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_warns_only_without_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    for value in ("bf16-mixed", "bf16", "bf16-true"):
        errors, notes = _problems(value)
        assert errors == []
        assert bool(notes) is not native
        if notes:
            assert "trainer=cpu" in notes[0] and "emulated" in notes[0]


@pytest.mark.parametrize("value", ["16-mixed", 16, "16-true", "transformer-engine"])
def test_fp16_on_cpu_is_refused_naming_the_bf16_preset(value: object) -> None:
    errors, _ = _problems(value)
    assert len(errors) == 1 and f"trainer.precision={value}" in errors[0] and "trainer=cpu_bf16" in errors[0]


def test_unknown_precision_is_refused_listing_the_choices() -> None:
    errors, _ = _problems("bf17")
    assert errors and "bf16-mixed" in errors[0] and "32-true" in errors[0]


@pytest.mark.parametrize("value", ["32-true", 32, "64-true"])
def test_full_precision_passes_everywhere(value: object) -> None:
    assert _problems(value) == ([], [])


def test_cpu_flags_decide_native_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert precision._cpu_flags(info) >= {"avx512_bf16", "amx_tile"}
    assert precision._cpu_flags(tmp_path / "missing") == set()


def test_config_check_refuses_fp16_on_cpu_and_takes_the_bf16_presets(make_cfg, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    cfg = make_cfg(["experiment=segmentation", "trainer=cpu_bf16"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "cpu"
    validate_config(cfg)
    gpu = make_cfg(["experiment=segmentation", "trainer=gpu_bf16"])
    assert gpu.trainer.precision == "bf16-mixed" and gpu.trainer.accelerator == "gpu"
    with pytest.raises(ConfigError, match=r"trainer.precision=16-mixed on a CPU"):
        validate_config(make_cfg(["experiment=segmentation", "trainer=cpu", "trainer.precision=16-mixed"]))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(precision.PrecisionWarning, match="no native bf16"):
        validate_config(make_cfg(["experiment=segmentation", "trainer=cpu_bf16"]))


# -- fp32 losses and recurrence under autocast ------------------------------------------------------
def test_losses_are_fp32_for_bf16_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 8, 8).bfloat16()
    target = (torch.rand(4, 1, 8, 8) > 0.5).float()
    assert CombinedSegmentationLoss()(logits, target).dtype == torch.float32
    assert FocalLoss(alpha=None)(torch.randn(6, 3).bfloat16(), torch.tensor([0, 1, 2, 0, 1, 2])).dtype == torch.float32
    part = torch.randn(5, 7).bfloat16()
    assert MultiTaskLoss()(part, None, torch.arange(5), torch.full((5,), -1)).dtype == torch.float32


def test_recurrent_state_stays_fp32_under_autocast() -> None:
    torch.manual_seed(0)
    lstm = RecurrentDropoutBiLSTM(16, 8).eval()
    x = torch.randn(3, 20, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, last = lstm(x)
    reference, _ = lstm(x)
    assert outputs.dtype == last.dtype == torch.float32
    # only the input projection is rounded to bf16: the 20 steps do not add up its error
    assert torch.allclose(outputs, reference, atol=0.03)


# -- every task trains under bf16-mixed ---------------------------------------------------------------
BF16 = ["debug=fast", "model.pretrained=false", "trainer=cpu_bf16", "logger=none", "test_after_fit=false"]
TASKS = {
    "segmentation": ["experiment=segmentation", "data.synthetic_images=24", "data.synthetic_size=64",
                     "model.log_images=0"],
    "violence": ["experiment=violence_optimal"],
    "behavior": ["experiment=intravideo"],
    "relevance_contrastive": ["experiment=relevance_contrastive", "data.image_size=64"],
    "relevance_segmentation": ["experiment=relevance_segmentation", "data.image_size=64"],
    "lego": ["experiment=lego_multitask"],
}
FAST_TASKS = {"segmentation"}


@pytest.mark.parametrize("task", [t if t in FAST_TASKS else pytest.param(t, marks=pytest.mark.slow) for t in TASKS])
def test_task_trains_under_bf16_mixed_with_finite_losses(make_cfg, tmp_path: Path, task: str, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)  # emulated bf16 trains too, slowly
    run_dir = tmp_path / "run"
    train(make_cfg([*TASKS[task], *BF16], run_dir))
    history = json.loads((run_dir / "training_history.json").read_text())
    records = history if isinstance(history, list) else history.get("epochs", [])
    losses = [value for record in records for key, value in record.items()
              if key in ("train/loss", "val/loss") and value is not None]
    assert losses and all(math.isfinite(float(v)) for v in losses), records


# -- model.compile -----------------------------------------------------------------------------------
def test_compile_options() -> None:
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {} and compile_options({"mode": "max-autotune"}) == {"mode": "max-autotune"}
    with pytest.raises(ValueError, match="model.compile"):
        compile_options("yes")


class TinyModule(SuiteModule):
    """A SuiteModule over a two-layer net, for the compile hooks."""

    def __init__(self, compile: bool | dict = False):
        super().__init__(optimizer=lambda params: torch.optim.SGD(params, lr=0.1), compile=compile)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        self.compiled_while_fitting: list[bool] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.compiled_while_fitting.append(self.net._compiled_call_impl is not None)
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)


def _loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


@pytest.mark.slow
def test_compiled_fit_saves_a_plain_checkpoint_and_ends_uncompiled(tmp_path: Path) -> None:
    module = TinyModule(compile={"backend": "aot_eager"})  # the compile path without the C++ build of inductor
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, _loader())
    assert module.compiled_while_fitting == [True, True]
    assert module.net._compiled_call_impl is None, "test and export run the eager network"
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    state = torch.load(tmp_path / "c.ckpt", weights_only=True)["state_dict"]
    assert set(state) == set(TinyModule().state_dict())
    plain = TinyModule()
    plain.load_state_dict(state)
    x = torch.randn(2, 4)
    assert torch.equal(plain.net(x), module.net(x))


def test_a_torch_compile_prefixed_state_dict_loads_into_the_plain_module() -> None:
    source = TinyModule()
    compiled = {f"net._orig_mod.{k.removeprefix('net.')}": v for k, v in source.state_dict().items()}
    target = TinyModule()
    target.load_state_dict(compiled)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
