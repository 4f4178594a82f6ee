"""A wrong key or a wrong type fails before any training, naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import InstantiationException
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from suite.config_check import (
    RangeRule,
    _leaves,
    check_command_line,
    check_group_overrides,
    range_errors,
    ranged_arg,
    rule_for,
    sweep_errors,
    validate_config,
    value_error,
)
from suite.errors import ConfigError
from suite.launch import check_accelerator
from suite.training import instantiate

ROOT = Path(__file__).resolve().parents[2]
# property tests: 200 examples by default; SUITE_HYPOTHESIS_EXAMPLES=5000 for a longer search
EXAMPLES = int(os.environ.get("SUITE_HYPOTHESIS_EXAMPLES", "200"))


def test_default_config_is_valid(make_cfg) -> None:
    validate_config(make_cfg([]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+data.batch_sise=4", r"unknown key 'data.batch_sise'.*did you mean 'data.batch_size'"),
        ("+model.net.backbon=resnet34", r"unknown key 'model.net.backbon'"),
        ("trainer.max_epochs=abc", r"'trainer.max_epochs' expects int \| None, got 'abc'"),
        ("data.val_fraction=high", r"'data.val_fraction' expects float"),
        ("data.augment=maybe", r"'data.augment' expects bool"),
        ("seed=one", r"'seed' expects int"),
        ("+selection_metrc=val/iou", r"unknown top-level key 'selection_metrc'.*did you mean 'selection_metric'"),
        ("model.loss.bce_weight=[1,2]", r"'model.loss.bce_weight' expects float"),
        ("+callbacks.history2._target_=callbacks.NoSuchCallback", r"callbacks.history2._target_: cannot import"),
    ],
)
def test_bad_keys_and_types_are_named(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg([override]))


def test_all_errors_are_reported_together(make_cfg) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(make_cfg(["seed=x", "+data.nope=1"]))
    assert "'seed' expects int" in str(info.value) and "data.nope" in str(info.value)


def test_cli_typo_fails_fast_without_training(tmp_path: Path) -> None:
    """Through the real entry point: short message, non-zero exit, no checkpoints written."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "trainer.max_epochs=abc", f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "'trainer.max_epochs' expects int | None, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoints").exists()


def test_cli_unknown_override_exits_2_naming_the_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", "data.batch_sise=4", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Could not override 'data.batch_sise'" in proc.stderr and "full_key: data.batch_sise" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_help_answers_quickly() -> None:
    """--help must not import torch/lightning (the entry point keeps heavy imports inside main)."""
    code = ("import sys, runpy; sys.argv=['train.py','--help']\n"
            "try:\n runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit: pass\nprint('torch' in sys.modules, 'lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False False"


PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_within_the_range_rules(make_cfg, preset: str) -> None:
    assert range_errors(make_cfg([f"experiment={preset}"])) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selection_mode=maximum", r"'selection_mode' must be min or max, got 'maximum'"),
        ("data.batch_size=0", r"'data.batch_size' must be > 0, got 0"),
        ("data.batch_size=-4", r"'data.batch_size' must be > 0, got -4"),
        ("data.num_workers=-1", r"'data.num_workers' must be >= 0, got -1"),
        ("trainer.max_epochs=-1", r"'trainer.max_epochs' must be >= 1, got -1 \(-1 would train forever"),
        ("trainer.max_epochs=0", r"'trainer.max_epochs' must be >= 1, got 0 .*untrained model"),
        ("model.optimizer.lr=0", r"'model.optimizer.lr' must be > 0, got 0"),
        ("data.val_fraction=1.0", r"'data.val_fraction' must be in \(0, 1\), got 1.0"),
        ("+data.synthetic_violent_fraction=1.5", r"'data.synthetic_violent_fraction' must be in \[0, 1\]"),
    ],
)
def test_out_of_range_values_are_named(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg([override]))


def test_range_rules_leave_null_and_wrong_types_to_the_other_checks(make_cfg) -> None:
    assert range_errors(make_cfg(["trainer.max_epochs=null"])) == []  # training by max_steps
    with pytest.raises(ConfigError) as info:
        validate_config(make_cfg(["data.batch_size=abc"]))
    assert "'data.batch_size' expects int" in str(info.value) and "must be > 0" not in str(info.value)


def test_an_interpolated_value_is_named_where_it_is_set(make_cfg) -> None:
    """callbacks.model_checkpoint.mode is ${selection_mode}: the message names the key to change, once."""
    assert range_errors(make_cfg(["selection_mode=maximum"])) == [
        "'selection_mode' must be min or max, got 'maximum' (whether a lower or a higher selection_metric is better)"]


def test_first_matching_rule_decides() -> None:
    rules = [RangeRule("data.special_size", lambda v: v == 3, "3"), RangeRule("*_size", lambda v: v > 0, "> 0")]
    assert rule_for("data.special_size", rules) is rules[0] and rule_for("data.other_size", rules) is rules[1]
    assert rule_for("data.seed", rules) is None


def test_swept_values_are_checked_one_by_one() -> None:
    errors = sweep_errors(["data.batch_size=0,4", "selection_mode=max,maximum", "seed=1",
                           "model.optimizer.lr=interval(0.0001,0.1)", "trainer.max_epochs=range(0,3)"])
    assert errors == ["'data.batch_size' must be > 0, got 0",
                      "'selection_mode' must be min or max, got 'maximum' (whether a lower or a higher "
                      "selection_metric is better)",
                      "'trainer.max_epochs' must be >= 1, got 0 (-1 would train forever and 0 would record an "
                      "untrained model as a finished run; to train by steps, set trainer.max_steps and "
                      "trainer.max_epochs=null)"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experiment=segmentaton"], r"experiment=segmentaton: there is no experiment 'segmentaton' "
                                     r"\(did you mean 'segmentation'\?\); the experiment options are: .*lego_part"),
        (["-m", "experiment=segmentation,nope"], r"experiment=nope: there is no experiment 'nope'"),
        (["trainer=gpux"], r"trainer=gpux: there is no trainer 'gpux'.*cpu, cpu_bf16, ddp, default, gpu, gpu_bf16"),
        (["experiment=[segmentation,lego_part]"], r"experiment=\[segmentation,lego_part\]: pick one experiment.*"
                                                  r"python train.py -m experiment=segmentation,lego_part"),
    ],
)
def test_bad_group_choices_are_refused_before_hydra(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_group_overrides(argv, ROOT / "conf")


@pytest.mark.parametrize(
    "argv",
    [["experiment=segmentation"], ["-m", "experiment=segmentation,lego_part"], ["experiment=null"], ["~experiment"],
     ["logger=[tensorboard,none]"], ["hydra/launcher=basic"], ["--help", "experiment=nope"], ["seed=1"]],
)
def test_good_group_choices_pass(argv: list[str]) -> None:
    check_group_overrides(argv, ROOT / "conf")


def test_a_value_refused_by_a_callback_constructor_names_the_callback_key(make_cfg) -> None:
    cfg = make_cfg(["experiment=violence_optimal", "callbacks.prediction_collapse.low=0.9999"])
    with pytest.raises(ConfigError, match=r"^callbacks.prediction_collapse: PredictionCollapse: need 0 <= low < high"):
        instantiate(cfg.callbacks.prediction_collapse, key="callbacks.prediction_collapse")


def test_a_value_refused_by_a_module_constructor_names_the_model_key(make_cfg) -> None:
    cfg = make_cfg(["experiment=intravideo", "model.pretrained=false", "model.tta.aggregation=foo"])
    with pytest.raises(ConfigError, match=r"model.tta.aggregation must be one of .*got 'foo'"):
        instantiate(cfg.model, key="model")


def test_a_nested_node_that_refuses_is_named_by_its_full_key() -> None:
    gap = {"_target_": "callbacks.collapse.PredictionCollapse", "low": 0.9, "high": 0.1}
    cfg = OmegaConf.create({"model": {"_target_": "builtins.dict", "net": gap}})
    with pytest.raises(ConfigError, match=r"^model.net: PredictionCollapse: need"):
        instantiate(cfg.model, key="model")
    detached = OmegaConf.create(gap)
    with pytest.raises(ConfigError, match=r"^callbacks.gap: PredictionCollapse: need"):
        instantiate(detached, key="callbacks.gap")


def test_errors_raised_outside_the_suite_keep_their_report() -> None:
    """A ValueError from torch's own code is not assumed to be a config value: it stays an internal error."""
    with pytest.raises(InstantiationException, match="dropout probability"):
        instantiate(OmegaConf.create({"_target_": "torch.nn.Dropout", "p": 2.0}), key="model.drop")


@pytest.mark.parametrize(
    ("trainer", "visible", "message"),
    [
        ({"accelerator": "gpu", "devices": 1}, 0, r"accelerator=gpu: no GPU visible to this process.*trainer=cpu"),
        ({"accelerator": "cuda", "devices": 1}, 0, r"trainer.accelerator=cuda: no GPU visible"),
        ({"accelerator": "gpu", "devices": 2}, 1, r"trainer.devices=2: 2 GPUs asked for, 1 visible to this process"),
    ],
)
def test_gpu_accelerator_needs_visible_gpus(monkeypatch: pytest.MonkeyPatch, trainer: dict, visible: int,
                                            message: str) -> None:
    monkeypatch.setattr("suite.launch.visible_gpus", lambda accelerator: visible)
    with pytest.raises(ConfigError, match=message):
        check_accelerator(OmegaConf.create(trainer))


@pytest.mark.parametrize("trainer", [{"accelerator": "cpu", "devices": 2}, {"accelerator": "auto", "devices": 1},
                                     {"accelerator": "gpu", "devices": -1}, {"accelerator": "gpu", "devices": 1}])
def test_accelerators_that_can_run_pass(monkeypatch: pytest.MonkeyPatch, trainer: dict) -> None:
    monkeypatch.setattr("suite.launch.visible_gpus", lambda accelerator: 1)
    check_accelerator(OmegaConf.create(trainer))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data.batch_sise=4"], r"(?s)Could not override 'data.batch_sise'.*full_key: data.batch_sise"),
        (["-m", "data.batch_sise=4", "seed=1,2"], r"Could not override 'data.batch_sise'"),
        (["+seed=3"], r"An item is already at 'seed'"),
        (["trainer.max_epochs=[1"], r"no viable alternative at input '\[1'"),
    ],
)
def test_a_command_line_hydra_cannot_compose_is_a_config_error(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_command_line(argv, ROOT / "conf")


@pytest.mark.parametrize("argv", [["-m", "seed=1,2"], ["experiment=intravideo", "hydra.run.dir=/x"],
                                  ["--help", "a.b=1"]])
def test_a_command_line_that_composes_passes(argv: list[str]) -> None:
    check_command_line(argv, ROOT / "conf")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", r"'seed' must be in \[0, 2\*\*32 - 1\], got -1 \(Lightning would replace"),
        ("++trainer.max_steps=0", r"'trainer.max_steps' must be -1 \(no limit\) or >= 1, got 0"),
        ("++trainer.limit_train_batches=0", r"'trainer.limit_train_batches' must be > 0"),
        ("callbacks.model_checkpoint.save_top_k=-2", r"'callbacks.model_checkpoint.save_top_k' must be >= -1"),
        ("data.dev_samples=0", r"'data.dev_samples' must be >= 1, got 0"),
        ("model.loss.dice_weight=-0.5", r"'model.loss.dice_weight' must be >= 0, got -0.5"),
        ("model.optimizer.lr=inf", r"'model.optimizer.lr' must be > 0, got inf"),
        ("data.val_fraction=nan", r"'data.val_fraction' must be in \(0, 1\), got nan"),
        ("on_data_change=ignore", r"'on_data_change' must be warn or error, got 'ignore'"),
    ],
)
def test_neighbouring_out_of_range_values_are_named(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg([override]))


def test_tool_options_share_the_config_ranges(capsys: pytest.CaptureFixture) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--val-fraction", type=ranged_arg("data.val_fraction"))
    assert parser.parse_args(["--val-fraction", "0.25"]).val_fraction == 0.25
    for bad, said in (("1.5", "must be in (0, 1), got 1.5"), ("0", "must be in (0, 1), got 0.0"),
                      ("nan", "expects a number, got 'nan'"), ("x", "expects a float, got 'x'")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--val-fraction", bad])
        assert exit_info.value.code == 2 and f"argument --val-fraction: {said}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no range rule"):
        ranged_arg("data.unranged_key")


# --- property: any value of any key is accepted or refused naming that key ---------------------------
def _composed(experiment: str | None) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"] if experiment else [])
    GlobalHydra.instance().clear()
    return cfg


CONFIGS = {name: _composed(name or None) for name in ("", "lego_multitask", "violence_optimal")}
LEAVES = sorted({(name, key) for name, cfg in CONFIGS.items() for key, _ in _leaves(cfg, "")
                 if not key.startswith(("hydra.", "paths."))})
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                      st.lists(st.integers(-3, 3), max_size=3))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(LEAVES), ANY_VALUE)
def test_any_value_of_any_key_passes_or_is_refused_naming_the_key(leaf: tuple[str, str], value: Any) -> None:
    name, key = leaf
    cfg = CONFIGS[name].copy()
    OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    try:
        validate_config(cfg)
    except ConfigError as err:
        lines = str(err).splitlines()
        if lines[0] == "invalid config:":  # every problem listed, each naming its key
            items = [line for line in lines[1:] if line.startswith("  - ")]
            assert items and all(key in line for line in items), (key, value, str(err))
        else:  # a _target_ that does not import stops the check at once
            assert lines[0].startswith(f"{key}: cannot import"), (key, value, str(err))
    else:  # accepted: then no range rule refuses it either
        assert value_error(key, value) is None
