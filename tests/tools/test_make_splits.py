"""tools.make_splits: option values out of range and output folders are refused before anything is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.make_splits import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--val-fraction", "1.5"], "argument --val-fraction: must be in (0, 1), got 1.5"),
        (["--test-fraction", "0"], "argument --test-fraction: must be in (0, 1), got 0.0"),
        (["--boost-share", "1"], "argument --boost-share: must be in (0, 1), got 1.0"),
        (["--val-fraction", "a fifth"], "argument --val-fraction: expects a float, got 'a fifth'"),
    ],
)
def test_fractions_out_of_range_exit_2_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--events", str(tmp_path / "events.csv"), "--out-dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_out_dir_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "splits").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["--events", str(tmp_path / "events.csv"), "--out-dir", str(tmp_path / "splits")])
    assert exit_info.value.code == 2
    assert f"argument --out-dir: {tmp_path / 'splits'} is a file, not a folder" in capsys.readouterr().err
