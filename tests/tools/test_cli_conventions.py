"""Every tool follows the suite's exit codes: 2 for a bad option or input, 130 for Ctrl-C without a traceback,
and an output file option that cannot be written is refused before any result is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ["tools.make_splits", "tools.compare", "tools.check_confound", "tools.score_motion"]
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize("tool", TOOLS)
def test_ctrl_c_exits_130_without_a_traceback(tool: str) -> None:
    # Ctrl-C lands while the tool reads its command line: every tool goes through the same door
    code = ("import argparse, runpy, sys\n"
            "def interrupted(*args, **kwargs):\n    raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_args = interrupted\n"
            "argparse.ArgumentParser.parse_intermixed_args = interrupted\n"
            f"sys.argv = ['{tool}']\nrunpy.run_module('{tool}', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith("interrupted") and "Traceback" not in proc.stderr


def test_check_confound_refuses_a_json_folder_before_printing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools.check_confound import main

    for name, text in (("train.csv", "video_id\nv1\n"), ("val.csv", "video_id\nv2\n"),
                       ("pred.csv", "video_id,prob_tail\nv2,0.4\nv2,0.6\n")):
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv"),
              "--predictions", str(tmp_path / "pred.csv"), "--json", str(tmp_path)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and f"argument --json: {tmp_path} is a folder" in captured.err
    assert captured.out == ""  # nothing computed, nothing printed


def test_score_motion_refuses_a_json_folder_before_scoring(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools.score_motion import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--json", str(tmp_path)])
    assert exit_info.value.code == 2 and f"argument --json: {tmp_path} is a folder" in capsys.readouterr().err
