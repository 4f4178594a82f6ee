"""python -m tools.report: a report per finished run, one per job of a sweep dir, exit 2 for what is not a run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.suite.test_report import ALERTS, assert_valid_pictures, fake_run

ROOT = Path(__file__).resolve().parents[2]
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}


def test_not_a_run_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for path, says in ((tmp_path / "missing", "no such run or sweep dir"),
                       (tmp_path / "empty", "is not a finished training run")):
        proc = subprocess.run([sys.executable, "-m", "tools.report", str(path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=ENV)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert says in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    code = ("import argparse, runpy, sys\n"
            "def interrupted(*args, **kwargs):\n    raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_args = interrupted\n"
            "sys.argv = ['tools.report', '.']\nrunpy.run_module('tools.report', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith("interrupted") and "Traceback" not in proc.stderr


def test_unfinished_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools.report import main

    run = fake_run(tmp_path / "run")
    (run / "metrics" / "metrics.json").unlink()
    assert main([str(run)]) == 2
    assert "is not a finished training run" in capsys.readouterr().err
    assert not (run / "report.md").exists()


def test_sweep_dir_gets_one_report_per_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools.report import main

    sweep = tmp_path / "sweep"
    for job in ("0", "1", "10"):
        fake_run(sweep / job, alerts=ALERTS if job == "1" else [])
    # an earlier launch kept aside and an evaluation's folder are not jobs
    fake_run(sweep / "0" / "previous" / "2026-01-01_00-00-00")
    fake_run(sweep / "1" / "eval" / "t0")
    (sweep / "1" / "eval" / "t0" / ".output.json").write_text("{}")
    assert main([str(sweep)]) == 0
    written = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert written == [str(sweep / job / "report.md") for job in ("0", "1", "10")]
    assert "2 alarm(s) fired" in (sweep / "1" / "report.md").read_text()
    assert not (sweep / "0" / "previous" / "2026-01-01_00-00-00" / "report.md").exists()
    assert not (sweep / "1" / "eval" / "t0" / "report.md").exists()


def test_compare_links_each_runs_report(tmp_path: Path) -> None:
    from tools.compare import build_report
    from tools.report import main

    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        fake_run(sweep / job)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
    assert main([str(sweep / "0")]) == 0  # job 1 has no report: its name stays plain
    text = build_report([sweep], plots=False)["report"]
    assert "| [`0`](../0/report.md) |" in text and "| `1` |" in text


@pytest.mark.slow
def test_real_run_report_from_the_command_line(tmp_path: Path, shared_data_dir: Path) -> None:
    from tests.conf.test_experiments import FAST
    from tests.conftest import train_run

    run = train_run(["experiment=lego_multitask", "data.image_size=32", *FAST], tmp_path / "sweep" / "0",
                    shared_data_dir)
    shutil.rmtree(run / "report", ignore_errors=True)
    (run / "report.md").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "tools.report", str(tmp_path / "sweep")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"written: {run / 'report.md'}" in proc.stdout
    text = (run / "report.md").read_text()
    assert "## Verdict" in text and "## Alarms" in text
    assert {"curves.png", "confusion.png"} <= {p.name for p in assert_valid_pictures(run / "report.md")}
