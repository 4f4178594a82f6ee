"""TTA aggregation, event metrics, ECE and probability clustering on hand-checked values; the module's
contract side (spec, typed step outputs, prediction rows)."""

from __future__ import annotations

import functools

import pandas as pd
import pytest
import torch
from torch import nn

from lightning_modules.behavior import BehaviorModule, EventMetrics, per_video_breakdown
from lightning_modules.calibration import max_prob_ece, probability_clusters
from lightning_modules.tta import aggregate_tta
from suite.contracts import SCORE_PREFIX, ContractError, DataSpec, Head, InputSpec, StepOutput
from suite.errors import ConfigError
from tools.check_confound import confound_report

CLIPS = torch.tensor([[0.1, 0.2, 0.9, 0.8, 0.6],   # mean 0.52, max 0.9, 3/5 clips >= 0.5
                      [0.4, 0.4, 0.4, 0.4, 0.9],   # mean 0.50, max 0.9, 1/5
                      [0.0, 0.0, 0.0, 0.0, 0.0]])


def test_tta_aggregation_by_hand() -> None:
    assert aggregate_tta(CLIPS, "mean").tolist() == pytest.approx([0.52, 0.5, 0.0])
    assert aggregate_tta(CLIPS, "max").tolist() == pytest.approx([0.9, 0.9, 0.0])
    assert aggregate_tta(CLIPS, "vote").tolist() == pytest.approx([0.6, 0.2, 0.0])
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_tta(CLIPS, "median")
    three_class = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]])
    assert aggregate_tta(three_class, "vote")[0].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert aggregate_tta(three_class, "mean")[0].tolist() == pytest.approx([13 / 30, 14 / 30, 0.1])


def test_ece_max_probability_convention_by_hand() -> None:
    # confidences 0.9 (right), 0.8 (right), 0.6 (wrong), 0.6 (wrong), 15 bins:
    # 1/4*|0.9-1| + 1/4*|0.8-1| + 2/4*|0.6-0| = 0.025 + 0.05 + 0.3
    p = torch.tensor([0.9, 0.2, 0.6, 0.4])
    t = torch.tensor([1, 0, 0, 1])
    assert max_prob_ece(p, t) == pytest.approx(0.375, abs=1e-6)
    assert max_prob_ece(torch.tensor([1.0, 0.0]), torch.tensor([1, 0])) == pytest.approx(0.0, abs=1e-6)
    # p = 0.9 and 0.1, both tail: both confidences are 0.9 (one bin), accuracy 1/2 -> |0.9 - 0.5| = 0.4.
    # torchmetrics' binary class bins p itself: 1/2*|0.9-1| + 1/2*|0.1-1| = 0.5, another convention.
    from torchmetrics.functional.classification import binary_calibration_error

    p, t = torch.tensor([0.9, 0.1]), torch.tensor([1, 1])
    assert max_prob_ece(p, t) == pytest.approx(0.4, abs=1e-6)
    assert float(binary_calibration_error(p, t, n_bins=15)) == pytest.approx(0.5, abs=1e-6)


def test_event_metrics_by_hand() -> None:
    metrics = EventMetrics(threshold=0.5, ece_bins=15)
    # tails: 0.9 (TP), 0.3 (FN); normals: 0.7 (FP), 0.1, 0.2, 0.2 (TN)
    metrics.update(torch.tensor([0.9, 0.3, 0.7]), torch.tensor([1, 1, 0]))
    metrics.update(torch.tensor([0.1, 0.2, 0.2]), torch.tensor([0, 0, 0]))
    out = metrics.compute(cluster_decimals=3)
    assert out["tail_recall"] == pytest.approx(0.5)
    assert out["tail_precision"] == pytest.approx(0.5)
    assert out["f1_tail"] == pytest.approx(0.5)
    # normal class: precision 3/4, recall 3/4 -> F1 0.75; macro = (0.75 + 0.5) / 2
    assert out["macro_f1"] == pytest.approx(0.625)
    # AUC: pairs (tail, normal) ranked right: 0.9 beats 4/4, 0.3 beats 3/4 -> 7/8
    assert out["roc_auc"] == pytest.approx(0.875)
    assert out["prob_clusters"] == 0.0
    metrics.reset()
    metrics.update(torch.tensor([0.2, 0.3]), torch.tensor([0, 0]))
    assert torch.isnan(torch.tensor(metrics.compute(3)["roc_auc"]))  # undefined with one class


def test_probability_clusters_counts_values_shared_three_times() -> None:
    probs = [0.1234, 0.1231, 0.1229, 0.5, 0.5, 0.7, 0.7, 0.7, 0.9]
    assert probability_clusters(probs, decimals=3) == 2  # 0.123 x3, 0.7 x3; 0.5 only twice
    assert probability_clusters(probs, decimals=4) == 1


def test_per_video_breakdown() -> None:
    rows = [{"video_id": "a", "label": 1, "prob_tail": 0.8}, {"video_id": "a", "label": 0, "prob_tail": 0.6},
            {"video_id": "b", "label": 0, "prob_tail": 0.1}]
    out = per_video_breakdown(rows, 0.5)
    assert out["per_video/a/accuracy"] == pytest.approx(0.5) and out["per_video/a/tail_recall"] == 1.0
    assert out["per_video/b/events"] == 1.0 and "per_video/b/tail_recall" not in out
    assert out["per_video/a/mean_prob"] == pytest.approx(0.7)


def test_confound_report_flags_video_scoring() -> None:
    train = pd.DataFrame({"video_id": ["a", "b", "c"]})
    val = pd.DataFrame({"video_id": ["c", "d"]})
    # every event of a video gets its video's score: clusters and eta^2 = 1
    confounded = pd.DataFrame({"video_id": list("aaaabbbb"), "prob_tail": [0.8] * 4 + [0.1] * 4})
    report = confound_report(train, val, confounded)
    assert report["prob_clusters"] == 2 and report["video_explained_variance"] == pytest.approx(1.0)
    assert report["verdict"].startswith("LIKELY") and report["train_val_videos_overlapping"] == 1
    diverse = pd.DataFrame({"video_id": list("aaaabbbb"), "prob_tail": [0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]})
    report = confound_report(train, val, diverse)
    assert report["prob_clusters"] == 0 and report["verdict"].startswith("no sign")


def test_confound_report_flags_flat_scores() -> None:
    videos = pd.DataFrame({"video_id": ["a", "b"]})
    flat = pd.DataFrame({"video_id": list("aabb"), "prob_tail": [0.5101, 0.5202, 0.5153, 0.5054]})
    report = confound_report(videos, videos, flat)
    assert report["prob_clusters"] == 0 and report["verdict"].startswith("NO SIGNAL")


class _MeanNet(nn.Module):
    """Logits from the mean pixel of a clip: enough to drive the module without a backbone."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Linear(1, 2)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.scale(clips.flatten(1).mean(dim=1, keepdim=True))


def _module(**kw) -> BehaviorModule:
    return BehaviorModule(net=_MeanNet(), loss=nn.CrossEntropyLoss(),
                          optimizer=functools.partial(torch.optim.SGD, lr=0.1), **kw)


def _spec(classes=("calm", "biting"), clips: int = 3, skipped: int = 0) -> DataSpec:
    return DataSpec("behavior", (Head("label", classes, positive=1),), InputSpec("clip", (2, 3, 4, 4)),
                    extras={"clips_per_event": clips, "skipped_events": skipped, "tail_class": classes[1]})


def _batch(n: int = 2, k: int = 3) -> dict:
    return {"video": torch.rand(n, k, 2, 3, 4, 4), "label": torch.tensor([1, 0][:n]),
            "event_id": [f"e{i}" for i in range(n)], "video_id": ["v0", "v1"][:n]}


def test_class_names_come_from_the_spec_and_steps_are_typed() -> None:
    module = _module()
    module.configure(_spec())
    assert module.class_names == ["calm", "biting"]
    val = module.validation_step(_batch(), 0)
    assert isinstance(val, StepOutput) and val.preds.shape == val.target.shape == val.prob.shape == (2,)
    assert set(BehaviorModule.step_outputs["val"]) <= {f for f in StepOutput.FIELDS if getattr(val, f) is not None}
    test = module.test_step(_batch(), 0)
    assert len(test.rows) == 2
    row = test.rows[0]
    assert (row.item_id, row.group, row.label) == ("e0", "v0", "biting")
    assert row.pred in ("calm", "biting") and set(row.scores) == {"calm", "biting"}
    record = row.as_record()
    assert record[f"{SCORE_PREFIX}biting"] == pytest.approx(record["prob_tail"], abs=1e-6)
    assert record["video_id"] == "v0" and {"p_clip0", "p_clip1", "p_clip2"} <= set(record)
    train = module.training_step({"video": torch.rand(2, 2, 3, 4, 4), "label": torch.tensor([0, 1])}, 0)
    assert train["loss"].requires_grad and train["step_output"].target_mean == pytest.approx(0.5)


def test_configure_refuses_specs_the_module_cannot_serve() -> None:
    with pytest.raises(ContractError, match=r"two classes with the tail class at index 1"):
        _module().configure(DataSpec("behavior", (Head("label", ("a", "b", "c"), positive=1),),
                                     InputSpec("clip", (2, 3, 4, 4))))
    # the former model.tta.clips_per_event must agree with the data, which decodes the clips
    with pytest.raises(ConfigError, match=r"model.tta.clips_per_event=7 differs from data.clips_per_event=5"):
        _module(tta={"clips_per_event": 7}).configure(_spec(clips=5))
    _module(tta={"clips_per_event": 5, "aggregation": "max"}).configure(_spec(clips=5))
    with pytest.raises(ConfigError, match=r"model.tta.aggregation"):
        _module(tta={"aggregation": "median"})


def test_module_logs_the_selection_metric_and_writes_no_files() -> None:
    module = _module()
    assert "val/f1_tail" in module.logged_metrics() and "val/roc_auc" not in module.logged_metrics()
    assert module.artifacts("fit") == {} and module.artifacts("test") == {}
