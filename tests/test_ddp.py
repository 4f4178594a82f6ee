"""DDP on CPU (gloo): rank-zero outputs, gathered predictions, same metrics as one process."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from callbacks.prediction_writer import PredictionWriter  # imported before forking the ranks: they share it
from tests.conftest import ROOT


class _TtaModule:
    """Averages the clips of one event, like a TTA module's ``aggregate_prediction_rows``."""

    def aggregate_prediction_rows(self, rows: list[dict]) -> list[dict]:
        events: dict[str, list[float]] = {}
        for row in rows:
            events.setdefault(row["event"], []).append(row["prob"])
        return [{"event": e, "prob": sum(p) / len(p), "clips": len(p)} for e, p in sorted(events.items())]


def _rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        trainer = SimpleNamespace(world_size=2, is_global_zero=rank == 0, default_root_dir=out)
        writer = PredictionWriter(filename="predictions_agg.csv")
        writer.on_test_epoch_start(trainer, None)
        # the clips of event "a" land on both ranks
        rows = [{"event": "a", "prob": 0.2 + 0.4 * rank}, {"event": f"r{rank}", "prob": 0.5}]
        writer.on_test_batch_end(trainer, None, {"rows": rows}, None, 0)
        writer.on_test_epoch_end(trainer, _TtaModule())
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_prediction_rows_are_gathered_then_aggregated_and_written_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path / "init"), str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    with open(tmp_path / "predictions_agg.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_event = {r["event"]: r for r in rows}
    assert sorted(by_event) == ["a", "r0", "r1"]
    assert float(by_event["a"]["prob"]) == pytest.approx(0.4) and by_event["a"]["clips"] == "2"


DATA = ["experiment=segmentation", "model.pretrained=false", "trainer.max_epochs=1", "data.synthetic_images=48",
        "data.batch_size=4", "seed=7"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(make_cfg, shared_data_dir: Path, tmp_path: Path) -> None:
    """``trainer=ddp`` with 2 gloo processes: outputs written once by rank 0, metrics as one process computes them."""
    import lightning as L
    import torch

    from suite.training import instantiate

    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", *DATA, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         f"paths.data_dir={shared_data_dir}", f"paths.cache_dir={shared_data_dir / 'cache'}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "training_history.json", "label_map.json",
                 "manifests_used.txt", "predictions_agg.csv", "metrics/metrics.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics" / "metrics.json").read_text())

    # The same weights evaluated by one process.
    cfg = make_cfg([*DATA, "trainer=cpu"], tmp_path / "one")
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    # torchmetrics metrics are synchronised over the ranks. The logged mean loss is rank 0's own
    # unless the module logs it with sync_dist=True, so it is compared only when it was synchronised.
    compared = [k for k in val if not k.endswith("/loss")]
    assert compared
    for key in compared:
        assert metrics["final_val"][key] == pytest.approx(val[key], abs=1e-4), key
    for key in (k for k in test if not k.endswith("/loss")):
        assert metrics[key] == pytest.approx(test[key], abs=1e-4), key

    # every test item once, whatever rank evaluated it
    with open(run_dir / "predictions_agg.csv") as fh:
        items = [row["item"] for row in csv.DictReader(fh)]
    assert len(items) == len(set(items)) == len(datamodule.test_dataloader().dataset)
