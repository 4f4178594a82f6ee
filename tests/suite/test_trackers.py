"""Trackers beside TensorBoard (conf/logger/): each preset composes, from the command line too, and a tiny
offline training sends every tracker the scalars, the hparams, an alarm's text and the run report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from suite.config_check import check_group_overrides
from suite.trackers import log_file, log_text
from tests.conftest import train_run

CONF = Path(__file__).resolve().parents[2] / "conf"
ALARM = "always-on tracker check"


def _logger_keys(option: str) -> set[str]:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return set(compose(config_name="train", overrides=[f"logger={option}"]).logger or {})
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(("option", "keys"), [
    ("tensorboard", {"tensorboard"}), ("csv", {"csv"}), ("mlflow", {"mlflow"}), ("wandb", {"wandb"}),
    ("none", set()), ("[tensorboard,csv]", {"tensorboard", "csv"}),
    ("[tensorboard,mlflow,wandb]", {"tensorboard", "mlflow", "wandb"}),
])
def test_logger_presets_compose_alone_and_as_a_list(option, keys):
    assert _logger_keys(option) == keys


def test_a_list_of_loggers_passes_the_command_line_check():
    check_group_overrides(["logger=[tensorboard,csv]"], CONF)  # logger is not a single-choice group


class _FakeTrainer:
    is_global_zero = True
    global_step = 3

    def __init__(self, loggers):
        self.loggers = loggers


def test_text_and_files_reach_the_csv_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = _FakeTrainer([logger])
    log_text(trainer, "health/gap", "gap 0.3 > 0.25")
    log_text(trainer, "health/gap", "gap 0.4 > 0.25", step=7)
    (tmp_path / "report.md").write_text("# report")
    log_file(trainer, tmp_path / "report.md")
    text = (tmp_path / "csv" / "text" / "health_gap.md").read_text()
    assert "## step 3" in text and "gap 0.4" in text and text.index("gap 0.3") < text.index("gap 0.4")
    assert (tmp_path / "csv" / "files" / "report.md").read_text() == "# report"


def test_a_failing_tracker_is_warned_about_not_raised(tmp_path, caplog):
    class MLFlowLogger:  # named like Lightning's: its experiment call raises
        run_id = "x"

        @property
        def experiment(self):
            raise RuntimeError("store is down")

    log_text(_FakeTrainer([MLFlowLogger()]), "verdict", "text")
    log_file(_FakeTrainer([MLFlowLogger()]), tmp_path / "missing.md")
    assert "store is down" in caplog.text


# -- one tiny training with every tracker ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, shared_data_dir) -> Path:
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("sqlalchemy")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # never the network, whatever the preset says
    mp.setenv("WANDB_SILENT", "true")
    try:
        run = train_run([
            "debug=fast", "model.pretrained=false", "trainer.max_epochs=1", "logger=[tensorboard,csv,mlflow,wandb]",
            # a rule that fires on every epoch: the alarm path to the trackers is exercised on any data
            f"+health.rules.always_on={{condition: above, metric: train/loss, threshold: -1.0, message: '{ALARM}'}}",
        ], tmp_path_factory.mktemp("tracked") / "run", shared_data_dir)
    finally:
        mp.undo()
    return run


def test_the_run_fired_the_alarm_and_wrote_its_report(tracked_run):
    alerts = json.loads((tracked_run / "alerts.json").read_text())
    assert any(a["rule"] == "always_on" for a in alerts)
    assert "verdict" in json.loads((tracked_run / "metrics" / "metrics.json").read_text())


def test_csv_store(tracked_run):
    folder = tracked_run / "csv"
    header = (folder / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/f1", "test/f1"} <= set(header)
    assert "task_name: segmentation" in (folder / "hparams.yaml").read_text()
    texts = "".join(p.read_text() for p in (folder / "text").glob("*.md"))
    assert ALARM in texts and "Verdict" in texts
    assert (folder / "files" / "report.md").is_file()


def test_mlflow_store(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_run / 'mlflow' / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "segmentation"]
    [run] = client.search_runs([experiment.experiment_id])
    assert {"train/loss", "val/f1", "test/f1"} <= set(run.data.metrics)
    assert run.data.params.get("task_name") == "segmentation"
    artifacts = tracked_run / "mlflow" / "artifacts"
    texts = "".join(p.read_text() for p in artifacts.rglob("*.txt"))
    assert ALARM in texts and "Verdict" in texts
    assert [p.name for p in artifacts.rglob("report.md")] == ["report.md"]


def test_wandb_offline_store(tracked_run):
    [offline] = list((tracked_run / "wandb").glob("offline-run-*"))
    # the run's records (scalars, config, panels) are in its transaction log until `wandb sync`
    records = b"".join(p.read_bytes() for p in offline.glob("*.wandb"))
    assert b"val/f1" in records and b"task_name" in records
    pages = "".join(p.read_text() for p in (offline / "files").rglob("*.html"))
    assert ALARM in pages or ALARM.encode() in records
    assert (offline / "files" / "report.md").exists()


def test_tensorboard_gets_the_alarm_and_the_report_as_text(tracked_run):
    events = b"".join(p.read_bytes() for p in (tracked_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert ALARM.encode() in events
    assert b"report" in events


def test_run_report_is_attached_and_a_failing_report_only_warns(tmp_path, monkeypatch, capsys):
    from lightning.pytorch.loggers import CSVLogger

    import suite.report
    from suite.training import send_run_report

    def fake_report(run_dir):
        (Path(run_dir) / "report").mkdir()
        (Path(run_dir) / "report" / "curves.png").write_bytes(b"png")
        (Path(run_dir) / "report.md").write_text("# report")
        return Path(run_dir) / "report.md"

    trainer = _FakeTrainer([CSVLogger(tmp_path / "logs", name="csv", version="")])
    monkeypatch.setattr(suite.report, "write_run_report", fake_report)
    assert send_run_report(trainer, tmp_path) == tmp_path / "report.md"
    files = tmp_path / "logs" / "csv" / "files"
    assert (files / "report.md").is_file() and (files / "report" / "curves.png").is_file()

    def broken_report(run_dir):
        raise ValueError("no figures")

    monkeypatch.setattr(suite.report, "write_run_report", broken_report)
    assert send_run_report(trainer, tmp_path) is None
    assert "the run report could not be written (ValueError: no figures)" in capsys.readouterr().out
