"""LEGO model pieces: MultiTaskLoss masking, freeze ratio, the curriculum sampler, the LR schedule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from callbacks.curriculum import SourceCurriculum
from datamodules.lego import SourceMixSampler
from lightning_modules.lego import warmup_cosine
from lightning_modules.multitask_loss import MultiTaskLoss
from lightning_modules.nets.lego import LegoClassifier, backbone_units

SEED_CURRICULUM = [
    {"until_epoch": 5, "mix": {"real": 0.2, "legacy": 0.4, "b200c": 0.4}},
    {"until_epoch": 15, "mix": {"real": 0.5, "legacy": 0.25, "b200c": 0.25}},
    {"until_epoch": None, "mix": {"real": 0.7, "legacy": 0.15, "b200c": 0.15}},
]


def _logits(n: int, c: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), requires_grad=True)


# -- loss ----------------------------------------------------------------------------------
def test_all_unknown_colours_give_a_finite_part_only_loss() -> None:
    loss_fn = MultiTaskLoss(part_weight=1.0, color_weight=0.5, label_smoothing=0.1)
    part, color = _logits(6, 4, 0), _logits(6, 3, 1)
    part_t = torch.tensor([0, 1, 2, 3, 0, 1])
    color_t = torch.full((6,), -1)
    loss = loss_fn(part, color, part_t, color_t)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(F.cross_entropy(part, part_t, label_smoothing=0.1).item(), rel=1e-6)
    loss.backward()
    assert color.grad is not None and torch.count_nonzero(color.grad) == 0  # no signal to the colour head
    assert torch.count_nonzero(part.grad) > 0


def test_mixed_batch_masks_unknown_colours_and_parts() -> None:
    loss_fn = MultiTaskLoss(part_weight=1.0, color_weight=0.5, label_smoothing=0.1)
    part, color = _logits(5, 4, 2), _logits(5, 3, 3)
    part_t = torch.tensor([0, -1, 2, 3, -1])
    color_t = torch.tensor([-1, 2, 0, -1, 1])
    terms = loss_fn.terms(part, color, part_t, color_t)
    known_p, known_c = part_t >= 0, color_t >= 0
    expected_part = F.cross_entropy(part[known_p], part_t[known_p], label_smoothing=0.1)
    expected_color = F.cross_entropy(color[known_c], color_t[known_c], label_smoothing=0.1)
    assert terms["loss_part"].item() == pytest.approx(expected_part.item(), rel=1e-6)
    assert terms["loss_color"].item() == pytest.approx(expected_color.item(), rel=1e-6)
    assert terms["loss"].item() == pytest.approx((expected_part + 0.5 * expected_color).item(), rel=1e-6)
    terms["loss"].backward()
    assert torch.count_nonzero(color.grad[~known_c]) == 0 and torch.count_nonzero(part.grad[~known_p]) == 0


def test_batch_without_any_label_is_zero_not_nan() -> None:
    part, color = _logits(3, 4), _logits(3, 2)
    loss = MultiTaskLoss()(part, color, torch.full((3,), -1), torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()  # still a graph: the step is a no-op rather than a crash


# -- network -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_nets() -> dict[float, LegoClassifier]:
    nets = {}
    for ratio in (0.0, 0.5, 1.0):
        nets[ratio] = LegoClassifier(num_parts=4, num_colors=3, freeze_ratio=0.0)
        nets[ratio].freeze(ratio)
    return nets


def _trainable(unit: torch.nn.Module) -> bool:
    return all(p.requires_grad for p in unit.parameters())


def test_freeze_ratio_freezes_the_first_layers(tiny_nets: dict[float, LegoClassifier]) -> None:
    units = backbone_units(tiny_nets[0.5].backbone)
    assert len(units) == 20  # efficientnet_b0: stem conv + BN, 16 blocks, head conv + BN
    assert all(_trainable(u) for u in backbone_units(tiny_nets[0.0].backbone))
    half = [_trainable(u) for u in units]
    assert half == [False] * 10 + [True] * 10
    assert not any(_trainable(u) for u in backbone_units(tiny_nets[1.0].backbone))
    for net in tiny_nets.values():  # heads always train
        assert _trainable(net.shared) and _trainable(net.part_head) and _trainable(net.color_head)
    net = tiny_nets[0.5].train()
    assert not units[1].training and units[-1].training  # frozen BatchNorm keeps its statistics


def test_freeze_ratio_applies_to_loaded_weights_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Frozen random layers only take away capacity: without weights, every layer trains."""
    random_init = LegoClassifier(num_parts=4, num_colors=3, freeze_ratio=0.5)
    assert random_init.freeze_ratio == 0.0 and all(_trainable(u) for u in backbone_units(random_init.backbone))
    assert "freeze_ratio=0.5 not applied" in capsys.readouterr().out
    weights = tmp_path / "efficientnet_b0.pth"
    torch.save(random_init.backbone.state_dict(), weights)
    loaded = LegoClassifier(num_parts=4, num_colors=3, freeze_ratio=0.5, weights=str(weights))
    assert [_trainable(u) for u in backbone_units(loaded.backbone)] == [False] * 10 + [True] * 10
    assert torch.equal(loaded.backbone.conv_stem.weight, random_init.backbone.conv_stem.weight)


def test_forward_normalises_inside_and_names_outputs(tiny_nets: dict[float, LegoClassifier]) -> None:
    net = tiny_nets[0.5].eval()
    part, color = net(torch.full((2, 3, 32, 32), 128.0))
    assert part.shape == (2, 4) and color.shape == (2, 3)
    assert net.output_names == ["part_logits", "color_logits"]
    part_only = LegoClassifier(num_parts=4, heads=["part"], freeze_ratio=0.0)
    assert part_only.output_names == ["part_logits"] and part_only.color_head is None


# -- sampling ------------------------------------------------------------------------------
def _sources() -> list[str]:
    return ["real"] * 100 + ["legacy"] * 300 + ["b200c"] * 200


@pytest.mark.parametrize(("epoch", "expected"), [
    (0, {"real": 0.2, "legacy": 0.4, "b200c": 0.4}),
    (4, {"real": 0.2, "legacy": 0.4, "b200c": 0.4}),
    (5, {"real": 0.5, "legacy": 0.25, "b200c": 0.25}),
    (14, {"real": 0.5, "legacy": 0.25, "b200c": 0.25}),
    (15, {"real": 0.7, "legacy": 0.15, "b200c": 0.15}),
    (40, {"real": 0.7, "legacy": 0.15, "b200c": 0.15}),
])
def test_curriculum_sampler_draws_the_stage_proportions(epoch: int, expected: dict[str, float]) -> None:
    sources = _sources()
    sampler = SourceMixSampler(sources, num_samples=20_000, curriculum=SEED_CURRICULUM, seed=0)
    sampler.set_epoch(epoch)
    assert sampler.mix() == pytest.approx(expected)
    counts = Counter(sources[i] for i in sampler)
    for source, share in expected.items():
        assert counts[source] / 20_000 == pytest.approx(share, abs=0.015)


def test_source_weights_and_absent_sources() -> None:
    sources = ["real"] * 100 + ["legacy"] * 300  # no b200c rows
    weighted = SourceMixSampler(sources, source_weights={"real": 3.0, "legacy": 1.0})
    assert weighted.mix() == pytest.approx({"real": 0.5, "legacy": 0.5})  # 3 x 100 vs 1 x 300
    curriculum = SourceMixSampler(sources, curriculum=SEED_CURRICULUM)
    assert curriculum.mix(0) == pytest.approx({"real": 0.2 / 0.6, "legacy": 0.4 / 0.6})


def test_draws_are_seeded_per_epoch_and_the_callback_moves_the_epoch() -> None:
    sampler = SourceMixSampler(_sources(), curriculum=SEED_CURRICULUM, seed=5)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same draw (a resumed run repeats it)
    callback = SourceCurriculum(verbose=False, log_mix=False)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_sampler=sampler), current_epoch=15, is_global_zero=True)
    callback.on_train_epoch_start(trainer, None)
    assert sampler.epoch == 15 and list(sampler) != first
    assert callback.last_mix == pytest.approx({"real": 0.7, "legacy": 0.15, "b200c": 0.15})


# -- schedule ------------------------------------------------------------------------------
def test_warmup_then_cosine() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = warmup_cosine(opt, max_epochs=30, warmup_epochs=3)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False)) and lrs[-1] < 1e-5
