"""LegoModule on the task contract: heads from the spec, typed step outputs and prediction rows, files
through artifacts() written by the callback, the spec in checkpoints (and checkpoints of older runs)."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from callbacks.artifacts import ArtifactWriter
from callbacks.collapse import PredictionCollapse
from callbacks.prediction_writer import PredictionWriter
from callbacks.tensorboard_panels import TensorBoardPanels
from datamodules.lego import LegoDataModule
from datamodules.synthetic.lego import GENERATOR, PARTS
from lightning_modules.base import SPEC_KEY
from lightning_modules.lego import LEGACY_CLASSES_KEY, LegoModule, checkpoint_spec
from suite.contracts import ContractError, DataSpec, Head, InputSpec, PredictionRow, StepOutput, check_callback_needs
from suite.errors import ConfigError

PART_NAMES, COLOR_NAMES = ("3001", "3003", "3022"), ("4", "14")
# steps called outside a Trainer log into nothing; Lightning says so once per step
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


class TinyNet(nn.Module):
    """A stand-in for LegoClassifier with its interface (``heads``, one logits tensor per head), fast on a CPU."""

    def __init__(self, num_parts: int = 0, num_colors: int = 0, heads: tuple[str, ...] = ("part", "color")):
        super().__init__()
        self.heads = [h for h in ("part", "color") if h in heads]
        sizes = {"part": num_parts, "color": num_colors}
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 16), nn.ReLU())
        self.outputs = nn.ModuleList(nn.Linear(16, sizes[h]) for h in self.heads)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shared = self.features(image / 255.0)
        return tuple(out(shared) for out in self.outputs)


def make_module(**kwargs) -> LegoModule:
    return LegoModule(net=TinyNet, optimizer=partial(torch.optim.AdamW, lr=1e-2), **kwargs)


def make_spec(heads: tuple[str, ...] = ("part", "color")) -> DataSpec:
    names = {"part": PART_NAMES, "color": COLOR_NAMES}
    return DataSpec(task="lego", heads=tuple(Head(h, names[h]) for h in heads),
                    input=InputSpec("image", (3, 16, 16)), extras={"subsets": ["parts real", "colors_real"]})


def make_batch(part: list[int], color: list[int]) -> dict:
    n = len(part)
    return {"image": torch.rand(n, 3, 16, 16) * 255, "part": torch.tensor(part), "color": torch.tensor(color),
            "subset": ["parts real"] * (n - 1) + ["colors_real"], "source": ["real"] * n,
            "group": [f"g{i}" if i else "" for i in range(n)], "name": [f"img{i}.jpg" for i in range(n)]}


# -- configure ----------------------------------------------------------------------------------
def test_configure_builds_the_heads_of_the_spec() -> None:
    module = make_module()
    assert module.net is None
    assert {"val/part_acc", "val/part_top5", "val/color_acc"} <= module.logged_metrics()  # before the data
    module.configure(make_spec())
    assert module.net.heads == ["part", "color"] and module.primary == "part"
    assert [o.out_features for o in module.net.outputs] == [3, 2]
    assert module.part_names == list(PART_NAMES) and module.color_names == list(COLOR_NAMES)
    assert module.logged_metrics() == {"val/loss", "val/loss_part", "val/loss_color", "val/part_acc",
                                       "val/part_top5", "val/color_acc"}
    assert "val__parts_real__part_acc" in module.metrics  # per subset, names made key-safe
    module.configure(make_spec())  # the same spec again (a loaded checkpoint): nothing rebuilt
    with pytest.raises(ConfigError, match="other classes"):
        module.configure(DataSpec("lego", (Head("part", ("a", "b")), Head("color", COLOR_NAMES)),
                                  InputSpec("image", (3, 16, 16))))


def test_colour_only_spec_builds_one_head_and_makes_colour_primary() -> None:
    module = make_module()
    module.configure(make_spec(("color",)))
    assert module.net.heads == ["color"] and module.primary == "color" and module.part_names == []
    assert module.logged_metrics() == {"val/loss", "val/loss_part", "val/loss_color", "val/color_acc"}
    with pytest.raises(ConfigError, match="no part or color head"):
        make_module().configure(DataSpec("lego", (Head("other", ("a", "b")),), InputSpec("image", (3, 8, 8))))


def test_deprecated_model_keys_still_load_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        module = make_module(tasks=["color"], log_confusion=True)
    assert "model.tasks is deprecated" in caplog.text and "model.log_confusion is deprecated" in caplog.text
    assert module.logged_metrics() == {"val/loss", "val/loss_part", "val/loss_color", "val/color_acc"}
    module.configure(make_spec())
    assert module.net.heads == ["color"]  # narrows the data's heads as it did


def test_step_outputs_satisfy_the_panels_and_writer_but_not_the_collapse_alarm() -> None:
    callbacks = {"confusion_matrix": TensorBoardPanels(), "prediction_writer": PredictionWriter()}
    check_callback_needs(callbacks, LegoModule.step_outputs, "LegoModule")
    with pytest.raises(ContractError, match="callbacks.collapse .*pred_mean"):
        check_callback_needs({"collapse": PredictionCollapse()}, LegoModule.step_outputs, "LegoModule")


# -- steps ---------------------------------------------------------------------------------------
def test_validation_step_gives_the_primary_heads_known_labels() -> None:
    module = make_module()
    module.configure(make_spec())
    batch = make_batch(part=[0, -1, 2, 1], color=[1, 0, -1, -1])
    out = module.validation_step(batch, 0)
    assert isinstance(out, StepOutput) and out.loss.ndim == 0
    assert out.target.tolist() == [0, 2, 1]  # the unknown part is left out
    assert out.preds.shape == (3,) and out.prob.shape == (3, 3)
    assert torch.allclose(out.prob.sum(1), torch.ones(3)) and torch.equal(out.prob.argmax(1), out.preds)
    colour = make_module()
    colour.configure(make_spec(("color",)))
    assert colour.validation_step(batch, 0).target.tolist() == [1, 0]


def test_training_step_returns_the_loss_for_lightning() -> None:
    module = make_module()
    module.configure(make_spec())
    out = module.training_step(make_batch(part=[0, 1, 2], color=[0, 1, -1]), 0)
    assert set(out) == {"loss", "step_output"} and isinstance(out["step_output"], StepOutput)
    out["loss"].backward()
    assert module.net.outputs[0].weight.grad is not None


def test_test_rows_follow_the_prediction_schema() -> None:
    module = make_module()
    module.configure(make_spec())
    out = module.test_step(make_batch(part=[0, -1, 2], color=[-1, 1, 0]), 0)
    rows = out.rows
    assert len(rows) == 3 and all(isinstance(r, PredictionRow) for r in rows)
    first, unknown = rows[0].as_record(), rows[1].as_record()
    assert first["item_id"] == "img0.jpg" and first["group"] == "" and unknown["group"] == "g1"
    assert first["label"] == "3001" and unknown["label"] == "" and first["pred"] in PART_NAMES
    assert [k for k in first if k.startswith("score_")] == [f"score_{p}" for p in PART_NAMES]
    assert sum(first[f"score_{p}"] for p in PART_NAMES) == pytest.approx(1.0, abs=1e-4)
    assert first["color_true"] == "" and first["color_correct"] == "" and first["part_correct"] in (0, 1)
    assert unknown["color_true"] == "14" and unknown["part_true"] == "" and unknown["subset"] == "parts real"
    assert first["part_pred"] == first["pred"] and 0 < first["part_confidence"] <= 1


def test_confused_pairs_most_frequent_first() -> None:
    module = make_module(confusion_min_count=2)
    module.configure(make_spec())
    matrix = torch.tensor([[5, 3, 0], [1, 4, 2], [0, 6, 1]])
    assert module.confused_pairs(matrix) == [
        {"true_part": "3022", "predicted_part": "3003", "count": 6, "true_total": 7},
        {"true_part": "3001", "predicted_part": "3003", "count": 3, "true_total": 8},
        {"true_part": "3003", "predicted_part": "3022", "count": 2, "true_total": 7},
    ]


# -- a tiny run: files come from the callback, the spec from the checkpoint ----------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> LegoDataModule:
    root = GENERATOR.ensure(tmp_path_factory.mktemp("lego_module") / "syn", 1, size=16, real_captures=4)
    datamodule = LegoDataModule(root=str(root), batch_size=16, augment="none", seed=0)
    datamodule.setup()
    return datamodule


def _fit_and_test(datamodule: LegoDataModule, root: Path, callbacks: list[L.Callback]) -> tuple[LegoModule, L.Trainer]:
    module = make_module()
    module.configure(datamodule.spec())
    trainer = L.Trainer(default_root_dir=str(root), max_epochs=1, limit_train_batches=2, limit_val_batches=2,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=callbacks, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module, trainer


def test_files_are_written_by_the_artifact_writer_not_the_module(tiny_data: LegoDataModule, tmp_path: Path) -> None:
    _, trainer = _fit_and_test(tiny_data, tmp_path / "bare", [])
    # without the callback the run dir holds only Lightning's checkpoint: the module wrote nothing
    assert {p.name for p in (tmp_path / "bare").iterdir()} <= {"checkpoints"}
    module, _ = _fit_and_test(tiny_data, tmp_path / "run", [ArtifactWriter()])
    assert json.loads((tmp_path / "run" / "part_names.json").read_text()) == list(PARTS)
    assert json.loads((tmp_path / "run" / "color_names.json").read_text()) == ["0", "1", "2", "4", "14"]
    assert module.confused, "an untrained model confuses parts on the test split"
    table = (tmp_path / "run" / "confused_parts.csv").read_text().splitlines()
    assert table[0] == "true_part,predicted_part,count,true_total" and len(table) == len(module.confused) + 1
    assert trainer.callback_metrics["test/part_acc/real"] >= 0  # per-subset metrics logged


def test_checkpoint_stores_the_spec_and_old_checkpoints_still_load(tiny_data: LegoDataModule, tmp_path: Path) -> None:
    _, trainer = _fit_and_test(tiny_data, tmp_path, [])
    path = next((tmp_path / "checkpoints").glob("*.ckpt"))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert SPEC_KEY in checkpoint and LEGACY_CLASSES_KEY not in checkpoint
    fresh = make_module()
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert fresh.part_names == list(PARTS) and fresh.spec.extras["subsets"] == ["b200c", "legacy", "real"]
    # a checkpoint written before the spec was stored kept only the class lists
    legacy = {k: v for k, v in checkpoint.items() if k != SPEC_KEY}
    legacy[LEGACY_CLASSES_KEY] = {"part_names": list(PARTS), "color_names": ["0", "1", "2", "4", "14"],
                                  "subsets": ["b200c", "legacy", "real"]}
    spec = checkpoint_spec(legacy)
    assert [h.name for h in spec.heads] == ["part", "color"] and spec.head("color").num_classes == 5
    old = make_module()
    old.on_load_checkpoint(legacy)
    old.load_state_dict(legacy["state_dict"])
    assert old.color_names == ["0", "1", "2", "4", "14"] and old.subsets == ["b200c", "legacy", "real"]
    assert checkpoint_spec({"state_dict": {}}) is None
