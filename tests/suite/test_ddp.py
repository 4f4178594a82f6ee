"""DDP on CPU (gloo): rank-zero outputs, gathered predictions and event metrics, same metrics as one process."""

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

# imported before forking the ranks: they share them
from callbacks.prediction_writer import PredictionWriter
from lightning_modules.behavior import EventMetrics, gather_objects, per_video_breakdown
from lightning_modules.calibration import probability_clusters
from suite.contracts import PredictionRow, StepOutput
from tests.conftest import ROOT


class _TtaModule:
    """Averages the clips of one item, like a TTA module's ``aggregate_records`` (on plain dict records)."""

    def aggregate_records(self, records: list[dict]) -> list[dict]:
        items: dict[str, list[float]] = {}
        for record in records:
            items.setdefault(record["item_id"], []).append(record["score_tail"])
        return [{"item_id": i, "score_tail": sum(p) / len(p), "clips": len(p)} for i, p in sorted(items.items())]


def _run_ranks(target, tmp_path: Path, method: str = "fork", timeout: float = 60) -> None:  # noqa: ANN001
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=target, args=(r, str(tmp_path / "init"), str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():  # a hung rank must not outlive the test
            p.kill()
            p.join()
    assert codes == [0, 0]


def _writer_rank(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        trainer = SimpleNamespace(world_size=2, is_global_zero=rank == 0, default_root_dir=out)
        writer = PredictionWriter(filename="predictions_agg.csv")
        writer.on_test_epoch_start(trainer, None)
        # the clips of item "a" land on both ranks
        rows = [PredictionRow("a", scores={"tail": 0.2 + 0.4 * rank}), PredictionRow(f"r{rank}", scores={"tail": 0.5})]
        writer.on_test_batch_end(trainer, None, StepOutput(rows=rows), None, 0)
        writer.on_test_epoch_end(trainer, _TtaModule())
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_prediction_rows_are_gathered_then_aggregated_and_written_once(tmp_path: Path) -> None:
    _run_ranks(_writer_rank, tmp_path)
    with open(tmp_path / "predictions_agg.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_item = {r["item_id"]: r for r in rows}
    assert sorted(by_item) == ["a", "r0", "r1"]
    assert float(by_item["a"]["score_tail"]) == pytest.approx(0.4) and by_item["a"]["clips"] == "2"


# rank 0 sees only normal events, rank 1 only tail events; two shared scores (0.25 and 0.75) occur
# 3 times only when both ranks' events are counted
EVENTS = {0: [(f"a{i}", "va", 0, p) for i, p in enumerate([0.25, 0.25, 0.75, 0.1])],
          1: [(f"b{i}", "vb", 1, p) for i, p in enumerate([0.25, 0.75, 0.75, 0.9])]}


def _metrics_rank(rank: int, init_file: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics = EventMetrics(threshold=0.5, ece_bins=15)
        events = EVENTS[rank]
        metrics.update(torch.tensor([p for *_, p in events]), torch.tensor([label for _, _, label, _ in events]))
        values = metrics.compute(cluster_decimals=3)
        gathered = gather_objects(events)
        per_video = per_video_breakdown([{"video_id": v, "label": label, "prob_tail": p}
                                         for _, v, label, p in gathered], 0.5)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"values": values, "per_video": per_video,
                                                             "events": len(gathered)}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_behavior_event_metrics_see_every_rank(tmp_path: Path) -> None:
    # spawned, not forked: a rank forked from a process that already ran torch kernels can hang in them
    _run_ranks(_metrics_rank, tmp_path, method="spawn", timeout=240)
    everything = EVENTS[0] + EVENTS[1]
    assert probability_clusters([p for *_, p in everything]) == 2
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        values = result["values"]
        assert values["prob_clusters"] == 2.0, rank  # per rank: 0 clusters
        assert values["roc_auc"] == pytest.approx(13 / 16), rank  # per rank: one class, undefined
        assert result["events"] == 8
        per_video = result["per_video"]
        assert per_video["per_video/va/events"] == 4.0 and per_video["per_video/vb/tail_recall"] == 0.75


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
        items = [row["item_id"] for row in csv.DictReader(fh)]
    assert len(items) == len(set(items)) == len(datamodule.test_dataloader().dataset)
