"""RunDir on hand-made run dirs: config with overrides, checkpoints, standard outputs, the shared command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from suite.cli import parse_run_command
from suite.errors import ConfigError, DataError, UserError, run_guarded
from suite.run_dir import (
    LOCK_NAME,
    PREVIOUS_DIR,
    RunDir,
    acquire_run_lock,
    apply_overrides,
    data_changes,
    data_fingerprint,
    holds_run_lock,
    launch_rank,
    moved_checkpoint,
    parse_overrides,
    prepare_run_dir,
    release_run_lock,
    training_run_holding,
)

ROOT = Path(__file__).resolve().parents[2]
# property tests: 200 examples by default; SUITE_HYPOTHESIS_EXAMPLES=5000 for a longer search
EXAMPLES = int(os.environ.get("SUITE_HYPOTHESIS_EXAMPLES", "200"))

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



# --- one training per run dir --------------------------------------------------------------------------
def _hold_in_child(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock until killed."""
    code = ("import sys, time; from suite.run_dir import acquire_run_lock; "
            "acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_held_run_dir_is_refused_naming_its_holder_then_taken_over_once_it_died(tmp_path: Path) -> None:
    child = _hold_in_child(tmp_path / "run")
    try:
        with pytest.raises(UserError) as refused:
            acquire_run_lock(tmp_path / "run", "hydra.run.dir")
        message = str(refused.value)
        assert f"hydra.run.dir: {tmp_path / 'run'} is in use by another training: pid {child.pid} on " \
               f"{socket.gethostname()}, started " in message
        assert f"(-c {tmp_path / 'run'})" in message  # the holder's command line
        assert message.endswith("Wait for it to end, or choose another hydra.run.dir.")
    finally:
        child.kill()  # SIGKILL: the record stays behind, the flock goes with the process
        child.wait()
    note = acquire_run_lock(tmp_path / "run")
    try:
        assert note is not None and f"took over the run dir from pid {child.pid}" in note and "no longer runs" in note
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        release_run_lock(tmp_path / "run")


def test_the_lock_is_reentrant_and_an_ended_run_leaves_no_holder(tmp_path: Path) -> None:
    assert acquire_run_lock(tmp_path / "run") is None
    assert acquire_run_lock(tmp_path / "run") is None  # Hydra's callback, then train() in the same process
    release_run_lock(tmp_path / "run")
    assert holds_run_lock(tmp_path / "run")
    release_run_lock(tmp_path / "run")
    assert not holds_run_lock(tmp_path / "run")
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""
    assert acquire_run_lock(tmp_path / "run") is None  # no stale record, no note
    release_run_lock(tmp_path / "run")


def test_a_record_of_another_machine_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    record = {"pid": 1234, "host": "gpu-node-7", "started": 0, "command": ["train.py"]}
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"in use by a training of another machine: pid 1234 on gpu-node-7.*delete"):
        acquire_run_lock(tmp_path / "run")
    assert not holds_run_lock(tmp_path / "run")


def test_ddp_extra_ranks_read_their_rank_from_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert launch_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_rank() == 1


# --- a new run in a dir that holds an earlier one ----------------------------------------------------
def _finished_run(path: Path) -> Path:
    make_run(path)
    (path / "metrics").mkdir()
    (path / "metrics" / "metrics.json").write_text('{"test/f1": 0.5}')
    (path / "training_log_contrastive.json").write_text("[]")  # a file only one task writes
    return path


def test_overwrite_moves_the_earlier_run_aside_and_leaves_nothing_of_it_beside_the_new(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    run = _finished_run(tmp_path / "run")
    with pytest.raises(UserError, match="already holds a finished run"):
        prepare_run_dir(run, OmegaConf.create({"overwrite": False, "ckpt_path": None}))
    moved = prepare_run_dir(run, OmegaConf.create({"overwrite": True, "ckpt_path": None}))
    assert moved is not None and moved.parent == run / PREVIOUS_DIR
    assert sorted(p.name for p in run.iterdir()) == [PREVIOUS_DIR]
    assert (moved / "training_log_contrastive.json").is_file() and (moved / "metrics" / "metrics.json").is_file()
    # a checkpoint of the earlier run named by ckpt_path is found where it went
    assert moved_checkpoint(run, run / "checkpoints" / "best.ckpt") == moved / "checkpoints" / "best.ckpt"


def test_a_resume_moves_nothing_and_a_sweep_job_keeps_what_hydra_just_wrote(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    run = make_run(tmp_path / "run")
    assert prepare_run_dir(run, OmegaConf.create({"ckpt_path": "last"})) is None
    assert (run / "checkpoints" / "last.ckpt").is_file()
    moved = prepare_run_dir(run, OmegaConf.create({"ckpt_path": None}), keep=[".hydra"])
    assert moved is not None and sorted(p.name for p in run.iterdir()) == [".hydra", PREVIOUS_DIR]


def test_training_outputs_are_recognised(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert training_run_holding(run) == (run, None)
    assert training_run_holding(run / "metrics") == (run, "metrics")
    assert training_run_holding(run / "checkpoints" / "x") == (run, "checkpoints")
    assert training_run_holding(run / "eval" / "2026") == (None, None)
    assert training_run_holding(tmp_path / "elsewhere") == (None, None)


# --- the data a run read ----------------------------------------------------------------------------
def test_a_data_change_is_named_source_by_source_and_split_by_split(tmp_path: Path) -> None:
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,label\na.png,0\nb.png,1\n")
    ids = {"train": ["a", "b"], "val": ["c"]}
    before = data_fingerprint([(str(manifest), 2)], ids)
    assert data_changes(before, data_fingerprint([(str(manifest), 2)], ids)) == []
    manifest.write_text("path,label\na.png,0\nb.png,1\nd.png,1\n")
    now_ids = {"train": ["a", "b", "d"], "val": ["c"]}
    changes = data_changes(before, data_fingerprint([(str(manifest), 3)], now_ids), ids, now_ids)
    assert changes[0].startswith(f"source changed: {manifest} (rows 2 -> 3, size ")
    assert changes[1] == "split train differs (2 -> 3 items: 1 added, 0 removed)"
    folder = tmp_path / "images"
    folder.mkdir()
    changes = data_changes(before, data_fingerprint([(str(folder), 0)], ids))
    assert f"source added: {folder} (0 rows)" in changes and f"source no longer read: {manifest}" in changes


# --- overrides: any text parses or is a ConfigError naming it -------------------------------------------
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_override_text_parses_or_is_a_config_error_naming_it(text: str) -> None:
    try:
        parsed = parse_overrides([text])
    except ConfigError as err:
        assert str(err).startswith(f"cannot parse override '{text}': ")
    else:
        assert len(parsed) == 1


KEYS = st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){0,3}\Z")
VALUES = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr), st.booleans().map(str),
                   st.just("null"), st.lists(st.integers(0, 9), max_size=3).map(lambda v: str(v).replace(" ", "")),
                   st.text(alphabet="abc xyz,'=[]{}", max_size=10))


@settings(max_examples=EXAMPLES, deadline=None)
@given(KEYS, VALUES, st.sampled_from(["", "+", "++", "~"]))
def test_applying_any_override_to_a_run_config_works_or_names_the_key(key: str, value: str, prefix: str) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"seed": 7, "data": {"batch_size": 8, "root": None}, "model": {"lr": 0.001}})
    OmegaConf.set_struct(cfg, True)
    item = f"{prefix}{key}={value}" if prefix != "~" else f"~{key}"
    try:
        apply_overrides(cfg, [item])
    except ConfigError as err:
        assert f"'{item}'" in str(err)


def test_a_requeued_slurm_job_takes_its_dir_back_from_its_earlier_node(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    record = {"pid": 1234, "host": "gpu-node-7", "started": 0, "command": ["train.py"], "slurm_job_id": "991"}
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps(record))
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    note = acquire_run_lock(tmp_path / "run")
    try:
        assert note is not None and "took over the run dir from pid 1234 on gpu-node-7" in note
    finally:
        release_run_lock(tmp_path / "run")
