"""OnnxExport: after fit, the final test's items become the parity inputs of the bundle in <run>/export/."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from callbacks.onnx_export import OnnxExport, exports
from lightning_modules.base import SuiteModule
from lightning_modules.nets.segmentation import UNet
from lightning_modules.segmentation import SegmentationModule
from suite.contracts import DataSpec, Head, InputSpec
from suite.errors import ConfigError
from tests.conftest import compose_train_config

SPEC = DataSpec("segmentation", (Head("mask", ("background", "foreground"), positive=1),),
                InputSpec("image", (3, 32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))


class Squares(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        mask = torch.zeros(1, 32, 32)
        mask[:, 8:20, 8:20] = 1.0
        image = torch.randn(3, 32, 32, generator=g) * 0.1 + mask
        return {"image": image, "mask": mask, "name": f"{i}.png"}


def module(cls: type = SegmentationModule) -> SegmentationModule:
    torch.manual_seed(0)
    m = cls(UNet("resnet18", decoder_channels=(8, 8, 8, 8, 8)), nn.BCEWithLogitsLoss(),
            optimizer=lambda params: torch.optim.SGD(params, lr=0.01), log_images=0)
    m.configure(SPEC)
    return m


def trainer(tmp_path: Path, callback: OnnxExport) -> L.Trainer:
    return L.Trainer(default_root_dir=str(tmp_path), max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                     accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, callbacks=[callback])


def loader() -> DataLoader:
    return DataLoader(Squares(), batch_size=2)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[L.Trainer, SegmentationModule, OnnxExport]:
    """One fit shared by the tests (training is the slow part); each test then runs the final test."""
    callback = OnnxExport(parity_items=3, latency_runs=0, strict=True)
    t = trainer(tmp_path_factory.mktemp("fit"), callback)
    m = module()
    t.fit(m, loader(), loader())
    return t, m, callback


def test_the_test_after_fit_exports_with_its_items_as_parity_inputs(fitted, tmp_path: Path) -> None:
    t, m, callback = fitted
    callback.folder = str(tmp_path / "export")
    t.test(m, loader())
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    graph = parity["graphs"]["model"]
    assert parity["passed"] and graph["inputs"] == "test split" and graph["items"] == 3 and graph["batches"] == 2
    assert graph["outputs"]["foreground"]["max_abs_diff"] < 1e-4
    assert parity["checkpoint"] is None  # the weights in memory: this trainer saved no checkpoint
    meta = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert meta["task"] == "segmentation" and meta["options"]["train_size"] == [32, 32]
    assert callback.parity == parity


def test_a_disabled_callback_or_a_test_without_fit_exports_nothing(fitted, tmp_path: Path) -> None:
    t, m, callback = fitted
    callback.folder, callback.enabled = str(tmp_path / "off"), False
    try:
        t.test(m, loader())
    finally:
        callback.enabled = True
    assert not (tmp_path / "off").exists()
    # evaluate.py: a trainer that only tests
    trainer(tmp_path / "eval", OnnxExport(latency_runs=0, strict=True)).test(m, loader())
    assert not (tmp_path / "eval" / "export").exists()


def test_a_failed_export_warns_unless_strict(fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter broke")

    t, m, callback = fitted
    monkeypatch.setattr("callbacks.onnx_export.export_module", broken)
    callback.folder = str(tmp_path / "export")
    with pytest.raises(RuntimeError, match="exporter broke"):
        t.test(m, loader())
    callback.strict = False
    try:
        with pytest.warns(UserWarning, match="exporter broke"):
            t.test(m, loader())
    finally:
        callback.strict = True


class NoExport(SegmentationModule):
    export_graphs = SuiteModule.export_graphs


def test_a_module_without_export_graphs_is_told_at_setup(tmp_path: Path) -> None:
    callback = OnnxExport()
    with pytest.warns(UserWarning, match="no export graphs"):
        callback.setup(trainer(tmp_path, callback), module(NoExport), "fit")
    assert not exports(module(NoExport)) and exports(module())


@pytest.mark.parametrize("settings", [{"opset": 10}, {"parity_items": 0}, {"latency_runs": -1}])
def test_bad_settings_are_refused_before_training(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="callbacks.onnx_export"):
        OnnxExport(**settings)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_exports_by_default(experiment: str, tmp_path: Path) -> None:
    from hydra.core.global_hydra import GlobalHydra

    try:
        cfg = compose_train_config([f"experiment={experiment}", "callbacks.onnx_export.opset=11"], tmp_path)
    finally:
        GlobalHydra.instance().clear()
    node = cfg.callbacks.onnx_export
    assert node._target_ == "callbacks.OnnxExport" and node.enabled is True


def test_a_phase_that_only_explains_why_it_cannot_be_exported_is_not_exported_after_its_test() -> None:
    # the relevance encoder phase overrides export_graphs to say why (for export.py) but gives no parity
    # inputs: the callback must skip it instead of failing the run after its final test
    from lightning_modules.relevance import ContrastiveModule

    assert not exports(object.__new__(ContrastiveModule))
