"""RunDir on hand-made run dirs: config with overrides, checkpoints, standard outputs, the shared command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from suite.cli import parse_run_command
from suite.errors import ConfigError, DataError, run_guarded
from suite.run_dir import RunDir

# What train.py's .hydra/config.yaml looks like, in small: paths interpolate Hydra, callbacks the paths.
CONFIG = {
    "task_name": "segmentation", "seed": 7,
    "paths": {"root_dir": "${hydra:runtime.cwd}", "data_dir": "${paths.root_dir}/data",
              "output_dir": "${hydra:runtime.output_dir}"},
    "data": {"_target_": "x.DataModule", "batch_size": 8, "root": None},
    "model": {"_target_": "x.Module", "pretrained": True, "weights": "imagenet.pth", "lr": 0.001},
    "callbacks": {"history": {"filename": "${paths.output_dir}/training_history.json"}},
}


def make_run(path: Path, config: dict | None = None, checkpoints: tuple[str, ...] = ("best", "last"),
             launch_cwd: Path | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or CONFIG))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=7", "data.batch_size=8"]))
    if launch_cwd is not None:
        (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"cwd": str(launch_cwd)}}}))
    if checkpoints:
        (path / "checkpoints").mkdir()
        for name in checkpoints:
            (path / "checkpoints" / f"{name}.ckpt").write_bytes(b"weights")
    return path


def test_config_pins_hydra_paths_and_applies_overrides(tmp_path: Path) -> None:
    run = RunDir(make_run(tmp_path / "run", launch_cwd=tmp_path))
    cfg = run.config(["data.batch_size=2", "data.root='/data/new camera'", "+data.extra=[1,2]"],
                     output_dir=tmp_path / "eval")
    assert cfg.data.batch_size == 2 and cfg.data.root == "/data/new camera" and list(cfg.data.extra) == [1, 2]
    assert cfg.paths.root_dir == str(tmp_path)  # the folder train.py ran in, from .hydra/hydra.yaml
    assert cfg.paths.data_dir == f"{tmp_path}/data"
    assert cfg.callbacks.history.filename == f"{tmp_path / 'eval'}/training_history.json"
    assert cfg.model.pretrained is True and cfg.model.weights == "imagenet.pth"  # untouched unless asked
    default = run.config(weights_from_checkpoint=True)
    assert default.paths.output_dir == str(run.path)
    assert default.model.pretrained is False and default.model.weights is None
    assert run.launch_overrides() == ["seed=7", "data.batch_size=8"]


@pytest.mark.parametrize(("override", "culprit"), [
    ("data.batch_sise=2", "data.batch_sise"),  # unknown key: struct mode
    ("data.batch_size=2,4", "sweep"),
    ("model=lego", "model is a config section"),
    ("data.batch_size=[", "data.batch_size=["),
])
def test_config_refuses_bad_overrides_naming_them(tmp_path: Path, override: str, culprit: str) -> None:
    run = RunDir(make_run(tmp_path / "run"))
    with pytest.raises(ConfigError, match=culprit.replace("[", r"\[")):
        run.config([override])


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a run directory.*does not exist"):
        RunDir(tmp_path / "nowhere").config()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/\.hydra/config\.yaml is missing"):
        RunDir(tmp_path / "empty").config()
    corrupt = make_run(tmp_path / "corrupt")
    (corrupt / ".hydra" / "config.yaml").write_text("data: {batch_size: 8\nmodel: [\n")
    with pytest.raises(DataError, match=r"corrupt/\.hydra/config\.yaml cannot be read"):
        RunDir(corrupt).config()
    listed = make_run(tmp_path / "listed")
    (listed / ".hydra" / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match=r"listed/\.hydra/config\.yaml is not a run config"):
        RunDir(listed).config()


def test_checkpoint_best_last_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(make_run(tmp_path / "run"))
    assert run.checkpoint("best") == run.path / "checkpoints" / "best.ckpt"
    assert run.checkpoint("last") == run.path / "checkpoints" / "last.ckpt"
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"x")
    assert run.checkpoint(str(other)) == other
    (run.path / "checkpoints" / "epoch=3.ckpt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert run.checkpoint("epoch=3.ckpt") == run.path / "checkpoints" / "epoch=3.ckpt"  # by name in checkpoints/
    assert run.checkpoint("checkpoints/epoch=3.ckpt") == run.path / "checkpoints" / "epoch=3.ckpt"
    assert run.checkpoint("other.ckpt") == Path("other.ckpt")  # the current folder first


def test_missing_checkpoints_are_user_errors_naming_the_path(tmp_path: Path) -> None:
    run = RunDir(make_run(tmp_path / "run", checkpoints=("last",)))
    with pytest.raises(DataError, match=r"no checkpoint at .*run/checkpoints/best\.ckpt: .* holds last\.ckpt"):
        run.checkpoint("best")
    bare = RunDir(make_run(tmp_path / "bare", checkpoints=()))
    with pytest.raises(DataError, match="no checkpoints/ folder"):
        bare.checkpoint("last")
    with pytest.raises(DataError, match=r"checkpoint not found: .*missing\.ckpt"):
        run.checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(DataError, match="is a folder"):
        run.checkpoint(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:  # what the command line turns it into
        run_guarded(run.checkpoint, "best")
    assert exit_info.value.code == 2


def test_standard_outputs_and_finished(tmp_path: Path) -> None:
    run = RunDir(make_run(tmp_path / "run"))
    names = {"metrics_json": "metrics/metrics.json", "predictions_csv": "predictions_agg.csv",
             "label_map_json": "label_map.json", "splits_json": "splits.json",
             "history_json": "training_history.json", "export_dir": "export", "tensorboard_dir": "tensorboard"}
    for attribute, relative in names.items():
        assert getattr(run, attribute) == run.path / relative, attribute
    assert not run.is_finished and run.metrics() is None
    run.metrics_json.parent.mkdir()
    run.metrics_json.write_text("{broken")
    assert run.is_finished
    with pytest.raises(DataError, match=r"metrics\.json cannot be read"):
        run.metrics()
    run.metrics_json.write_text(json.dumps({"test/f1": 0.5}))
    assert run.metrics() == {"test/f1": 0.5}


def test_command_line_new_form(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    command = parse_run_command([str(run), "data.root=/x", "--ckpt", "last", "+k=1", "--out", "o"], "tool", "d")
    assert command.run == RunDir(run) and command.ckpt == "last" and command.out == Path("o")
    assert command.overrides == ["data.root=/x", "+k=1"]
    assert parse_run_command([str(run)], "tool", "d").ckpt == "best"


def test_command_line_old_export_spelling_still_works(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "run")
    command = parse_run_command(["quant=auto", f"run_dir={run}", "checkpoint=last", "out=o"], "python export.py",
                                "d", accept_legacy=True)
    assert command.run == RunDir(run) and command.ckpt == "last" and command.out == Path("o")
    assert command.overrides == ["quant=auto"]
    message = capsys.readouterr().err
    assert "deprecated" in message and f"python export.py {run} --ckpt last --out o quant=auto" in message


@pytest.mark.parametrize("argv", [[], ["quant=auto"], ["run", "data.x=["], ["run", "--ckpt"]])
def test_command_line_refuses_bad_usage_with_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_run_command(argv, "tool", "d")
    assert exit_info.value.code == 2
    assert "usage: tool <run dir>" in capsys.readouterr().err

