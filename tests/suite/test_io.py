"""Atomic outputs: a failed write (e.g. a full disk) leaves the previous file intact and no temp file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from suite import io as suite_io
from suite.io import atomic_write_csv, atomic_write_json


def test_json_and_csv_round_trip(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m" / "metrics.json", {"f1": 0.5, "n": 3})
    assert json.loads((tmp_path / "m" / "metrics.json").read_text()) == {"f1": 0.5, "n": 3}
    atomic_write_csv(tmp_path / "p.csv", [{"a": 1}, {"a": 2, "b": 3}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["a,b", "1,", "2,3"]


def test_disk_full_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"f1": 0.9})

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(suite_io.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"f1": 0.1})
    assert json.loads(target.read_text()) == {"f1": 0.9}
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """Outputs are readable by whoever the user's umask lets read them, like files made by open()."""
    import stat

    from suite.io import atomic_write_text, current_umask

    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


# --- output paths ----------------------------------------------------------------------------------------
def test_output_paths_that_cannot_be_written_are_named_by_their_option(tmp_path: Path, monkeypatch) -> None:
    from suite.errors import UserError
    from suite.outputs import check_output_dir, check_output_file, make_output_dir

    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    with pytest.raises(UserError, match=rf"^--out-dir: {blocker} is a file, not a folder"):
        check_output_dir(blocker, "--out-dir")
    with pytest.raises(UserError, match=rf"^paths.cache_dir: {blocker}/cache lies under {blocker}, which is a file"):
        check_output_dir(blocker / "cache", "paths.cache_dir")
    with pytest.raises(UserError, match=rf"^--json: {tmp_path} is a folder; give a file path"):
        check_output_file(tmp_path, "--json")
    assert check_output_file(tmp_path / "new" / "scores.json", "--json") == tmp_path / "new" / "scores.json"
    assert not (tmp_path / "new").exists()  # a check creates nothing
    monkeypatch.setattr(suite_io.os, "access", lambda path, mode: False)  # root ignores chmod: simulate it
    with pytest.raises(UserError, match=rf"^hydra.run.dir: cannot write in {tmp_path} \(permission denied"):
        make_output_dir(tmp_path / "run", "hydra.run.dir")


def test_output_options_are_checked_while_the_command_line_is_read(tmp_path: Path, capsys) -> None:
    import argparse

    from suite.outputs import output_dir_arg, output_file_arg

    (tmp_path / "file").write_text("")
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--out-dir", type=output_dir_arg)
    parser.add_argument("--json", type=output_file_arg)
    assert parser.parse_args(["--out-dir", str(tmp_path / "new")]).out_dir == tmp_path / "new"
    for argv, said in ((["--out-dir", str(tmp_path / "file")], f"argument --out-dir: {tmp_path / 'file'} is a file"),
                       (["--json", str(tmp_path)], f"argument --json: {tmp_path} is a folder")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2 and said in capsys.readouterr().err


# --- a folder of outputs as a unit ----------------------------------------------------------------------
def _training_run(path: Path) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (path / "metrics").mkdir()
    (path / "metrics" / "metrics.json").write_text('{"test/f1": 0.9}')
    return path


def test_a_folder_of_outputs_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    from suite.outputs import OUTPUT_MARKER, output_folder

    dest = tmp_path / "eval"
    with output_folder(dest, kind="evaluate") as partial:
        assert partial == tmp_path / "eval.partial" and not dest.exists()
        (partial / "metrics.json").write_text("{}")
    assert sorted(p.name for p in dest.iterdir()) == [OUTPUT_MARKER, "metrics.json"]
    assert json.loads((dest / OUTPUT_MARKER).read_text())["kind"] == "evaluate"
    assert not (tmp_path / "eval.partial").exists()

    # a failed re-run leaves the earlier output as it was, and no partial folder
    with pytest.raises(RuntimeError, match="export failed"), output_folder(dest, kind="evaluate", replace=True) as p:
        (p / "parity.json").write_text("{}")
        raise RuntimeError("export failed")
    assert sorted(p.name for p in dest.iterdir()) == [OUTPUT_MARKER, "metrics.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]

    # a successful re-run replaces it whole: no file of the earlier output survives beside the new ones
    with output_folder(dest, kind="evaluate", replace=True) as partial:
        (partial / "predictions_agg.csv").write_text("item_id\n")
    assert sorted(p.name for p in dest.iterdir()) == [OUTPUT_MARKER, "predictions_agg.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_a_training_run_or_a_users_folder_is_never_an_output_folder(tmp_path: Path) -> None:
    from suite.errors import UserError
    from suite.outputs import output_folder

    run = _training_run(tmp_path / "run")
    with pytest.raises(UserError, match=rf"^--out: {run} is the folder of a training run; .*{run}/eval/<timestamp>"):
        with output_folder(run, kind="evaluate"):
            pass
    with pytest.raises(UserError, match=rf"^--out: {run / 'metrics'} is part of the outputs of the training run "
                                        rf"{run} \(metrics\)"):
        with output_folder(run / "metrics", kind="evaluate", replace=True):
            pass
    assert json.loads((run / "metrics" / "metrics.json").read_text()) == {"test/f1": 0.9}
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"")
    with pytest.raises(UserError, match=rf"^--out: {mine} already exists and holds files this command did not write"):
        with output_folder(mine, kind="evaluate", replace=True):
            pass
    with output_folder(run / "eval" / "first", kind="evaluate") as partial:  # the default place is fine
        (partial / "m.json").write_text("{}")
    with pytest.raises(UserError, match="holds an earlier evaluate output; give a new folder"):
        with output_folder(run / "eval" / "first", kind="evaluate"):  # replace=False keeps it
            pass
    (run / "eval" / "first" / "metrics").mkdir()  # an evaluation's folder holds metrics/ too: not a training run
    (run / "eval" / "first" / "metrics" / "metrics.json").write_text("{}")
    with output_folder(run / "eval" / "first", kind="evaluate", replace=True) as partial:
        (partial / "m.json").write_text("{}")
    assert sorted(p.name for p in mine.iterdir()) == ["cat.jpg"]
