"""Relevance task (seed 000, VeroAllarme): the two training phases.

- :class:`ContrastiveModule` (experiment ``relevance_contrastive``): triplet margin loss or
  InfoNCE on (anchor, positive, negative) frames; saves ``checkpoints/contrastive.pth``.
- :class:`RelevanceSegmentationModule` (experiment ``relevance_segmentation``): encoder from
  ``encoder_ckpt`` (phase 1) or from scratch, full-resolution masks fitted to the motion
  pseudo-labels with the shared segmentation loss; val/test IoU and F1 against the motion masks;
  at test time region-level relevant/irrelevant accuracy and alert precision/recall of the
  trained network and of the untrained one (as built, before fine-tuning), and the seed's
  comparison image. Saves ``checkpoints/segmentation.pth`` and ``checkpoints/complete.pth``.

Both write ``training_log_<phase>.json`` in the run dir.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from lightning_modules.base import SuiteModule
from lightning_modules.nets.relevance import NET_FORMAT, load_encoder, region_scores, save_encoder
from suite.errors import UserError
from suite.io import atomic_write_bytes, atomic_write_json

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over the batch: each anchor's positive against every positive and negative in it.

    Written here because neither torch nor the installed libraries ship InfoNCE; embeddings are
    already unit length, so dot products are cosine similarities.
    """
    candidates = torch.cat([positive, negative], dim=0)
    logits = anchor @ candidates.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))


class PhaseLog:
    """Per-epoch records and run facts of one phase -> ``training_log_<phase>.json``."""

    def __init__(self, phase: str):
        self.phase = phase
        self.started = time.time()
        self.epochs: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    def add_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        record = {"epoch": epoch}
        for k, v in sorted(metrics.items()):
            if k.startswith(("train/", "val/")) and not k.endswith("_step"):
                try:
                    record[k.removesuffix("_epoch")] = float(v)
                except (TypeError, ValueError):
                    continue
        self.epochs = [e for e in self.epochs if e["epoch"] != epoch] + [record]

    def write(self, run_dir: Path) -> None:
        losses = [e.get("train/loss") for e in self.epochs if e.get("train/loss") is not None]
        summary = {"phase": self.phase, "seconds": round(time.time() - self.started, 1),
                   "epochs": self.epochs, **self.extra}
        if losses:
            summary.update({"initial_loss": losses[0], "final_loss": losses[-1],
                            "improvement": (losses[0] - losses[-1]) / losses[0] if losses[0] else 0.0})
        atomic_write_json(run_dir / f"training_log_{self.phase}.json", summary)


class _PhaseModule(SuiteModule):
    phase = ""

    def setup_phase(self) -> None:
        self.phase_log = PhaseLog(self.phase)

    def on_train_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.phase_log.add_epoch(self.current_epoch, dict(self.trainer.callback_metrics))

    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def checkpoint_dir(self) -> Path:
        ckpt = self.trainer.checkpoint_callback
        return Path(ckpt.dirpath) if ckpt is not None and ckpt.dirpath else self.run_dir() / "checkpoints"

    def best_net_state(self) -> dict[str, torch.Tensor]:
        """The network's weights of best.ckpt (what the run reports), else the current ones."""
        from suite.checkpoints import load_checkpoint

        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        if best and Path(best).is_file():
            state = load_checkpoint(best)["state_dict"]
            return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            self.save_phase_files()
            self.phase_log.write(self.run_dir())

    def save_phase_files(self) -> None:
        raise NotImplementedError


class ContrastiveModule(_PhaseModule):
    phase = "contrastive"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: str = "triplet",
        margin: float = 0.5,
        temperature: float = 0.1,
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights)
        if loss not in ("triplet", "infonce"):
            raise UserError(f"model.loss must be 'triplet' or 'infonce', got {loss!r}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.hparams["backbone"] = net.config["backbone"]
        self.net = net
        self.loss_name, self.temperature = loss, temperature
        self.triplet = nn.TripletMarginLoss(margin=margin)
        # a triplet is "right" when the positive is closer to the anchor than the negative
        self.val_acc = BinaryAccuracy()
        self.test_acc = BinaryAccuracy()
        self.setup_phase()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        n = len(batch["anchor"])
        emb = self(torch.cat([batch["anchor"], batch["positive"], batch["negative"]]))
        a, p, neg = emb[:n], emb[n:2 * n], emb[2 * n:]
        if self.loss_name == "triplet":
            loss = self.triplet(a, p, neg)
        else:
            loss = info_nce(a, p, neg, self.temperature)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        if stage != "train":
            right = ((a - neg).norm(dim=1) - (a - p).norm(dim=1)).detach()
            metric = self.val_acc if stage == "val" else self.test_acc
            metric.update(right, torch.ones_like(right, dtype=torch.long))
            self.log(f"{stage}/triplet_acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_triplets(batch)

    def _log_triplets(self, batch: dict[str, Any], count: int = 4) -> None:
        """Sample predictions for TensorBoard: anchor | positive | negative with their embedding distances."""
        logger = self.logger
        if logger is None or not hasattr(logger.experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = min(count, len(batch["anchor"]))
        with torch.no_grad():
            emb = self(torch.cat([batch["anchor"][:n], batch["positive"][:n], batch["negative"][:n]]))
        a, p, neg = emb[:n], emb[n:2 * n], emb[2 * n:]
        d_pos, d_neg = (a - p).norm(dim=1).tolist(), (a - neg).norm(dim=1).tolist()
        fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
        for i in range(n):
            for j, key in enumerate(("anchor", "positive", "negative")):
                image = batch[key][i].detach().float().cpu()
                image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-6)
                axes[i][j].imshow(image.permute(1, 2, 0).numpy())
                axes[i][j].axis("off")
                if j:
                    dist = d_pos[i] if j == 1 else d_neg[i]
                    ok = d_pos[i] < d_neg[i]
                    axes[i][j].set_title(f"{key} d={dist:.2f}", fontsize=8, color="green" if ok else "red")
        fig.tight_layout()
        logger.experiment.add_figure("val/triplets", fig, global_step=self.current_epoch)
        plt.close(fig)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        self._step(batch, "test")
        rows = [{"event_index": int(e), "negative_event_index": int(ne)}
                for e, ne in zip(batch["event"], batch["negative_event"], strict=True)]
        return {"rows": rows}

    def save_phase_files(self) -> None:
        net = copy.deepcopy(self.net).cpu()
        net.load_state_dict(self.best_net_state())
        path = self.checkpoint_dir() / "contrastive.pth"
        save_encoder(net, path)
        self.phase_log.extra["encoder_file"] = str(path)
        print(f"\nphase 1 encoder saved: {path} (use it with model.encoder_ckpt={path})")


class RelevanceSegmentationModule(_PhaseModule):
    phase = "segmentation"

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        encoder_ckpt: str | None = None,
        threshold: float = 0.5,
        region_threshold: float = 0.5,
        comparison_events: int = 4,
        pretrained: bool = False,
        weights: str | None = None,
    ):
        super().__init__(optimizer=optimizer, scheduler=scheduler, pretrained=pretrained, weights=weights)
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.hparams["backbone"] = net.config["backbone"]
        self.net = net
        if encoder_ckpt:
            load_encoder(self.net, encoder_ckpt)
            print(f"encoder initialised from phase 1: {encoder_ckpt}")
        else:
            print("note: model.encoder_ckpt is null, the encoder is trained from scratch"
                  + (" (from ImageNet weights)" if pretrained or weights else "")
                  + "; pass model.encoder_ckpt=<run>/checkpoints/contrastive.pth to start from phase 1")
        self.loss_fn = loss
        self.threshold, self.region_threshold = threshold, region_threshold
        self.comparison_events = comparison_events
        self.val_metrics = self._pixel_metrics("val/")
        self.test_metrics = self._pixel_metrics("test/")
        self.train_metrics = self._pixel_metrics("train/")
        self.region_metrics = nn.ModuleDict({name: MetricCollection({
            "region_acc": BinaryAccuracy(), "alert_precision": BinaryPrecision(), "alert_recall": BinaryRecall(),
            "alert_acc": BinaryAccuracy()}) for name in ("trained", "untrained")})
        self._untrained: dict[str, torch.Tensor] | None = None
        self._comparison: list[dict[str, Any]] = []
        self.setup_phase()

    def _pixel_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"iou": BinaryJaccardIndex(threshold=self.threshold),
                                 "f1": BinaryF1Score(threshold=self.threshold),
                                 "precision": BinaryPrecision(threshold=self.threshold),
                                 "recall": BinaryRecall(threshold=self.threshold)}, prefix=prefix)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def on_fit_start(self) -> None:
        if self._untrained is None:
            self._untrained = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def _pixel_step(self, images: torch.Tensor, target: torch.Tensor, metrics: MetricCollection, stage: str):
        logits = self(images)
        loss = self.loss_fn(logits, target)
        prob = torch.sigmoid(logits.detach())
        metrics.update(prob.flatten(), target.flatten().long())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(target),
                 sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=len(target))
        return loss, prob

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, prob = self._pixel_step(batch["image"], batch["mask"], self.train_metrics, "train")
        return {"loss": loss, "pred_mean": prob.mean(), "target_mean": batch["mask"].mean()}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._pixel_step(batch["image"], batch["mask"], self.val_metrics, "val")

    # -- test: pixels against motion, regions and alerts against truth -------------------
    def _untrained_net(self) -> nn.Module | None:
        if self._untrained is None:
            return None
        if "_untrained_copy" not in self.__dict__:
            net = copy.deepcopy(self.net)
            net.load_state_dict(self._untrained)
            # kept outside the module tree so it never enters a checkpoint
            object.__setattr__(self, "_untrained_copy", net.eval())
        return self.__dict__["_untrained_copy"]

    def _decide(self, net: nn.Module, event: dict[str, Any], name: str) -> dict[str, Any]:
        with torch.no_grad():
            prob = torch.sigmoid(net(event["frames"].to(self.device))).amax(dim=0)[0].cpu()
        ids = [r["id"] for r in event["regions"]]
        scores = region_scores(prob, event["labels"], ids)
        relevant = [s > self.region_threshold for s in scores]
        metrics = self.region_metrics[name]
        truth = torch.tensor([r["relevant"] for r in event["regions"]], dtype=torch.long)
        known = truth >= 0
        if known.any():
            metrics["region_acc"].update(torch.tensor(relevant, dtype=torch.float)[known], truth[known])
        if event["event_relevant"] >= 0:
            alert = torch.tensor([float(any(relevant))])
            target = torch.tensor([int(event["event_relevant"])])
            for key in ("alert_precision", "alert_recall", "alert_acc"):
                metrics[key].update(alert, target)
        return {"prob": prob, "scores": scores, "relevant": relevant, "alert": any(relevant)}

    def test_step(self, event: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        frames = event["frames"]
        middle = frames[event["middle"]:event["middle"] + 1]
        self._pixel_step(middle, event["mask"][None].to(frames), self.test_metrics, "test")
        trained = self._decide(self.net, event, "trained")
        untrained_net = self._untrained_net()
        untrained = self._decide(untrained_net, event, "untrained") if untrained_net is not None else None
        if len(self._comparison) < self.comparison_events and event["regions"]:
            self._comparison.append({"frame": frames[event["middle"]].cpu(), "motion": event["motion"],
                                     "regions": event["regions"], "trained": trained, "untrained": untrained,
                                     "event_id": event["event_id"]})
        row = {"event_id": event["event_id"], "regions": len(event["regions"]),
               "relevant_regions": int(sum(trained["relevant"])), "alert": int(trained["alert"]),
               "alert_true": event["event_relevant"],
               "region_scores": ";".join(f"{s:.3f}" for s in trained["scores"])}
        if untrained is not None:
            row["alert_untrained"] = int(untrained["alert"])
        return {"rows": [row]}

    def on_test_epoch_start(self) -> None:
        self._comparison = []
        for metrics in self.region_metrics.values():
            metrics.reset()

    def on_test_epoch_end(self) -> None:
        for name, metrics in self.region_metrics.items():
            for key, metric in metrics.items():
                if metric.update_count:  # only what the data could score
                    prefix = "test/" if name == "trained" else "test/untrained_"
                    self.log(prefix + key, metric.compute(), batch_size=1)
        if self._comparison and self.trainer.is_global_zero:
            image = comparison_image(self._comparison, self.region_threshold)
            self._write_comparison(image)

    def on_test_end(self) -> None:
        if self.trainer.is_global_zero:
            self.phase_log.extra["test"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                                            if k.startswith("test/")}
            self.phase_log.write(self.run_dir())

    def _write_comparison(self, image: np.ndarray) -> None:
        import cv2

        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if ok:
            atomic_write_bytes(self.run_dir() / "comparison.jpg", encoded.tobytes())
        for logger in self.loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image("test/comparison", image, global_step=self.global_step,
                                            dataformats="HWC")

    def save_phase_files(self) -> None:
        dm = self.trainer.datamodule
        state = self.best_net_state()
        payload = {"format": NET_FORMAT, **self.net.config, "state_dict": state}
        ckpt_dir = self.checkpoint_dir()
        _save(payload, ckpt_dir / "segmentation.pth")
        complete = {**payload, "image_size": int(getattr(dm, "image_size", 224)), "threshold": self.threshold,
                    "region_threshold": self.region_threshold,
                    "motion": dm.detector.settings() if hasattr(dm, "detector") else {}}
        _save(complete, ckpt_dir / "complete.pth")
        self.phase_log.extra["files"] = [str(ckpt_dir / "segmentation.pth"), str(ckpt_dir / "complete.pth")]
        print(f"\nphase 2 saved: {ckpt_dir / 'segmentation.pth'}, {ckpt_dir / 'complete.pth'} "
              f"(python -m deploy.relevance <events dir> --model {ckpt_dir / 'complete.pth'})")


def _save(payload: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _draw_regions(image: np.ndarray, regions: list[dict[str, Any]], relevant: list[bool] | None,
                  scores: list[float] | None) -> np.ndarray:
    import cv2

    out = image.copy()
    for i, r in enumerate(regions):
        x, y, w, h = (int(round(v)) for v in r["box"])
        color = (255, 255, 0) if relevant is None else ((0, 220, 0) if relevant[i] else (230, 0, 0))
        cv2.rectangle(out, (x, y), (x + w, y + h), color, 2)
        if scores is not None:
            cv2.putText(out, f"{scores[i]:.2f}", (x + 2, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1)
    return out


def comparison_image(items: list[dict[str, Any]], region_threshold: float) -> np.ndarray:
    """Rows of events; columns: motion detection | untrained | trained (green relevant, red irrelevant)."""
    import cv2

    rows = []
    for item in items:
        frame = ((item["frame"] * STD + MEAN).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        motion = frame.copy()
        motion[item["motion"].numpy() > 0] = (0.5 * motion[item["motion"].numpy() > 0] + [0, 0, 127]).astype(np.uint8)
        cols = [_draw_regions(motion, item["regions"], None, None)]
        for key in ("untrained", "trained"):
            result = item[key]
            if result is None:
                cols.append(np.zeros_like(frame))
                continue
            heat = cv2.applyColorMap((result["prob"].numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
            blend = (0.55 * frame + 0.45 * heat).astype(np.uint8)
            cols.append(_draw_regions(blend, item["regions"], result["relevant"], result["scores"]))
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cols], axis=1))
    header = np.full((18, rows[0].shape[1], 3), 255, np.uint8)
    width = rows[0].shape[1] // 3
    for i, title in enumerate(("motion detection", "untrained", "trained")):
        cv2.putText(header, title, (i * width + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return np.ascontiguousarray(np.concatenate([header, *rows], axis=0))
