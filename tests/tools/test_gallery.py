"""tools.gallery: the table from recorded run dirs, --only, the output folder, and one --quick pair (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from suite.errors import UserError
from tools import gallery
from tools.gallery import PAIRS, RunFacts, pair_row, select_pairs, table_markdown, write_gallery

ROOT = Path(__file__).resolve().parents[2]
PAIR_002 = next(p for p in PAIRS if p.id == "002")
PAIR_004 = next(p for p in PAIRS if p.id == "004")


def make_run(path: Path, alerts: list[dict] | None, history: list[dict]) -> Path:
    path.mkdir(parents=True)
    if alerts is not None:
        (path / "alerts.json").write_text(json.dumps(alerts))
    (path / "training_history.json").write_text(json.dumps(history))
    (path / "metrics").mkdir()
    (path / "metrics" / "metrics.json").write_text(json.dumps({"test/f1": 0.1}))
    return path


def alert(rule: str, epoch: int | None = 1, batch: int | None = None) -> dict:
    return {"epoch": epoch, "step": 10, "batch": batch, "rule": rule, "severity": "critical", "action": "warn",
            "seed": "002", "message": "m", "values": {}, "hint": None}


HISTORY_FAIL = [{"epoch": 0, "train/loss": 0.3, "val/f1": 0.05}, {"epoch": 1, "train/loss": 0.005, "val/f1": 0.02}]
HISTORY_FIX = [{"epoch": 0, "train/loss": 0.8, "val/f1": 0.4}, {"epoch": 1, "train/loss": 0.6, "val/f1": 0.71}]


def test_row_reproduced_and_quiet_fix(tmp_path: Path) -> None:
    fail = RunFacts.read(make_run(tmp_path / "f", [alert("loss_zero_f1_low"), alert("prediction_collapse", None, 7)],
                                  HISTORY_FAIL))
    fix = RunFacts.read(make_run(tmp_path / "x", [alert("some_other_rule")], HISTORY_FIX))
    row = pair_row(PAIR_002, fail, fix)
    assert row["reproduced"] and row["fix_quiet"]
    assert "`loss_zero_f1_low` (critical, epoch 1)" in row["alarm"] and "batch 7" in row["alarm"]
    assert row["failure_figure"] == "val/f1 = 0.020 (last epoch)"
    assert "0.710" in row["fix_figure"]
    assert row["fix_alarms"] == "none of the pair's alarms; other alarms: some_other_rule"
    table = table_markdown([row])
    assert table.splitlines()[0].startswith("| failure | figure that shows it (value) | alarm that fired")
    assert len(table.splitlines()) == 3


def test_row_not_reproduced_says_why(tmp_path: Path) -> None:
    fail = RunFacts.read(make_run(tmp_path / "f", [], HISTORY_FIX))
    fix = RunFacts.read(make_run(tmp_path / "x", [alert("loss_zero_f1_low")], HISTORY_FIX))
    row = pair_row(PAIR_002, fail, fix)
    assert not row["reproduced"] and not row["fix_quiet"]
    assert row["alarm"] == f"none: not reproduced ({PAIR_002.why_not})"
    assert "`loss_zero_f1_low`" in row["fix_alarms"]


def test_row_tells_unwatched_from_quiet(tmp_path: Path) -> None:
    fail = RunFacts.read(make_run(tmp_path / "f", None, HISTORY_FAIL))
    fix = RunFacts.read(make_run(tmp_path / "x", None, HISTORY_FIX))
    row = pair_row(PAIR_002, fail, fix)
    assert row["alarm"].startswith("not watched") and row["fix_alarms"].startswith("not watched")
    assert not row["fix_quiet"]


def test_gap_figure_over_sources(tmp_path: Path) -> None:
    hist = [{"epoch": 0, "val/part_acc/real": 0.2, "val/part_acc/legacy": 0.9, "val/part_acc/b200c": 0.6}]
    run = RunFacts.read(make_run(tmp_path / "f", [alert("source_gap", 0)], hist))
    assert gallery.headline(PAIR_004, run) == pytest.approx(0.7)
    assert pair_row(PAIR_004, run, run)["failure_figure"].startswith("gap of val/part_acc/* = 0.700")


def test_write_gallery_table_and_figure(tmp_path: Path) -> None:
    fail = RunFacts.read(make_run(tmp_path / "f", [alert("loss_zero_f1_low")], HISTORY_FAIL), wall_s=12.0)
    fix = RunFacts.read(make_run(tmp_path / "x", [], HISTORY_FIX), wall_s=10.0)
    out = tmp_path / "g"
    out.mkdir()
    write_gallery(out, [(PAIR_002, fail, fix, [["py", "train.py", "a=1"], ["py", "train.py", "b=2"]])], False,
                  tmp_path, 22.0)
    readme = (out / "README.md").read_text()
    assert "`loss_zero_f1_low` (critical, epoch 1)" in readme and "![002](002.png)" in readme
    assert "| 002-failure | 12 | `python train.py a=1` |" in readme
    assert (out / "002.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["rows"][0]["reproduced"] is True


def test_only_selects_in_gallery_order_and_refuses_unknown() -> None:
    assert [p.id for p in select_pairs("002,000")] == ["000", "002"]
    assert len(select_pairs(None)) == 5
    with pytest.raises(UserError, match="--only: unknown pair"):
        select_pairs("000,007")


def test_train_command_keeps_data_apart_and_quick_bounds_batches(tmp_path: Path) -> None:
    cmd = gallery.train_command(PAIR_002, PAIR_002.failure, tmp_path / "r", tmp_path / "d", quick=True)
    assert "model.pretrained=false" in cmd and "callbacks.onnx_export.enabled=false" in cmd
    assert f"paths.data_dir={tmp_path / 'd'}" in cmd
    assert cmd[-5:-2] == ["debug=fast", "trainer.max_epochs=2", "data.batch_size=2"]
    assert cmd.index("model.loss.bce_weight=1") > cmd.index("experiment=segmentation")


def test_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "gallery"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "tools.gallery", "--out", str(foreign), "--only", "002"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "already exists and holds files this command did not write" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


@pytest.mark.slow
def test_quick_smoke_of_one_pair(tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    proc = subprocess.run([sys.executable, "-m", "tools.gallery", "--out", str(out), "--only", "002", "--quick",
                           "--runs", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "002.png").is_file() and "--quick" in (out / "README.md").read_text()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["pair"] for r in rows] == ["002"]
    assert not rows[0]["failure_figure"].startswith("run failed"), rows[0]["failure_figure"]
    assert not rows[0]["fix_figure"].startswith("run failed"), rows[0]["fix_figure"]
    assert (tmp_path / "runs" / "002-failure" / "alerts.json").is_file()


def test_a_hanging_training_is_stopped_and_reported(tmp_path: Path) -> None:
    error, wall = gallery._train([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "run",
                                 timeout_s=1.0)
    assert error is not None and error.startswith("stopped after 1 s") and wall < 20
    run = RunFacts.read(tmp_path / "run", error, wall)
    row = pair_row(PAIR_002, run, run)
    assert row["failure_figure"].startswith("run failed: stopped after") and not row["reproduced"]


def test_rebuild_redraws_from_recorded_runs_and_replaces_its_own_gallery(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs / "002-failure", [alert("prediction_collapse", None, 3)], HISTORY_FAIL)
    make_run(runs / "002-fix", [], HISTORY_FIX)
    (runs / "002-failure.gallery.json").write_text(json.dumps({"command": ["py", "train.py", "x=1"], "wall_s": 30.0,
                                                               "error": None}))
    out = tmp_path / "gallery"
    for _ in range(2):  # the second time replaces the gallery it wrote
        assert gallery.main(["--out", str(out), "--runs", str(runs), "--only", "002", "--rebuild"]) == 0
    readme = (out / "README.md").read_text()
    assert "`prediction_collapse` (critical, batch 3)" in readme and "| 002-failure | 30 |" in readme
    assert "| 002-fix | - | - |" in readme and not (tmp_path / "gallery.partial").exists()
    with pytest.raises(UserError, match="--rebuild: give --runs"):
        gallery.main(["--out", str(tmp_path / "g2"), "--rebuild"])


def test_coarse_head_of_pair_000_upsamples_and_survives_its_weights_file() -> None:
    import torch

    from lightning_modules.nets.relevance import CoarseHeadUNet, net_from_payload, net_payload, relevance_unet

    net = relevance_unet(head_size=8, backbone="resnet18", decoder_channels=[16, 16, 16, 16, 16]).eval()
    assert isinstance(net, CoarseHeadUNet) and type(relevance_unet()) is not CoarseHeadUNet
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        logits = net(images)
        assert logits.shape == (1, 1, 64, 64)
        # the logits are the 8x8 map, upsampled bilinearly
        coarse = net.head(net.decoder(net.encoder(images), (8, 8)))
        upsampled = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
        assert torch.allclose(logits, upsampled)
        rebuilt = net_from_payload(net_payload(net), "x").eval()
        assert isinstance(rebuilt, CoarseHeadUNet) and rebuilt.head_size == 8
        assert torch.allclose(rebuilt(images), logits)
    assert coarse.shape[-2:] == (8, 8)


def test_pair_settings_are_shared_by_both_sides_and_name_real_alarms(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    rules = {name for f in (ROOT / "conf" / "health").glob("*.yaml")
             for name in (OmegaConf.load(f).get("rules") or {})}
    callback_alarms = {"prediction_collapse", "early_decision", "non_finite_loss"}
    for pair in PAIRS:
        assert set(pair.rules) <= rules | callback_alarms, pair.id
        failure, fix = (gallery.train_command(pair, side, tmp_path / "r", tmp_path / "d", quick=False)
                        for side in (pair.failure, pair.fix))
        # the two sides differ only by their own overrides: same data, epochs and optimiser
        assert [a for a in failure if a not in pair.failure.overrides] == [a for a in fix
                                                                           if a not in pair.fix.overrides]
        assert sum(a.startswith("trainer.max_epochs=") for a in failure) == 1, pair.id


def test_pair_002_trains_both_sides_on_sparse_masks(tmp_path: Path) -> None:
    for side in (PAIR_002.failure, PAIR_002.fix):
        cmd = gallery.train_command(PAIR_002, side, tmp_path / "r", tmp_path / "d", quick=False)
        (key,) = [a for a in cmd if a.startswith("data.synthetic_foreground=")]
        low, high = json.loads(key.partition("=")[2])
        assert 0 < low <= high <= 0.02
