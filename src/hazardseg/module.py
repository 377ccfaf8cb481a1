"""``Segmenter``: the LightningModule that trains a segmentation net and evaluates anomaly scorers.

Scorers are post-hoc: the test step runs the network once and hands the same logits/features to every
configured scorer, so comparing five scorers costs one forward pass.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from hazardseg.errors import HazardsegError
from hazardseg.metrics import AnomalyMetrics, PerImageAnomalyMetrics

METRIC_IGNORE = 255  # label used inside the metrics for "not scored" (dataset ignore + anomaly pixels)


class NonFiniteLossError(HazardsegError):
    """Training diverged (NaN/inf loss)."""


class Segmenter(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optim: Mapping[str, Any] | DictConfig,
        num_classes: int,
        ignore_index: int | None = None,
        anomaly_index: int | None = None,
        class_names: list[str] | None = None,
        scorers: Mapping[str, nn.Module] | None = None,
        checkpoint_meta: Mapping[str, Any] | None = None,
        num_panels: int = 0,
    ):
        super().__init__()
        self.net = net
        self.loss = loss
        self.optim_cfg = optim
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.anomaly_index = anomaly_index
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        # A plain dict (not a ModuleDict) keeps scorer statistics out of the model checkpoint: they are
        # saved per checkpoint by the pipeline, and a scorer sweep must be able to load any checkpoint.
        self.scorers: dict[str, nn.Module] = dict(scorers or {})
        self.checkpoint_meta = dict(checkpoint_meta or {})
        self.val_metrics = self._segmentation_metrics("val/")
        self.test_metrics = self._segmentation_metrics("test/")
        self.anomaly_metrics = nn.ModuleDict({name: AnomalyMetrics() for name in self.scorers})
        self.image_anomaly_metrics = nn.ModuleDict({name: PerImageAnomalyMetrics() for name in self.scorers})
        self.test_results: dict[str, float] = {}
        self.test_curves: dict[str, dict] = {}
        self.num_panels = num_panels
        self.per_image = True  # also compute the original per-image protocol (eval.per_image)
        self.panels: list[tuple[str, Any, float]] = []  # (image name, HxWx3 uint8, per-image mIoU)

    # ------------------------------------------------------------------ forward / steps
    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs = self(batch["image"])
        terms = self.loss(outputs, batch["mask"])
        self._check_finite(terms["loss"], batch, batch_idx)
        bs = batch["image"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/loss_{name}", value, batch_size=bs)
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])["logits"]
        self.val_metrics.update(logits.argmax(1), self._metric_target(batch["mask"]))

    def on_validation_epoch_end(self) -> None:
        self._log_segmentation(self.val_metrics, "val/")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self(batch["image"])
        logits, mask = outputs["logits"], batch["mask"]
        self.test_metrics.update(logits.argmax(1), self._metric_target(mask))
        first_scores = None
        if self.anomaly_index is not None:
            is_anomaly = mask == self.anomaly_index
            valid = None if self.ignore_index is None else mask != self.ignore_index
            for name, scorer in self.scorers.items():
                scores = scorer(logits.float(), outputs.get("features"))
                first_scores = scores if first_scores is None else first_scores
                self.anomaly_metrics[name].update(scores, is_anomaly, valid)
                if self.per_image:
                    self.image_anomaly_metrics[name].update(scores, is_anomaly, valid)
        self._collect_panels(batch, logits, first_scores)

    def on_test_start(self) -> None:
        self.panels = []
        for scorer in self.scorers.values():
            scorer.to(self.device).eval()

    def _collect_panels(self, batch: dict, logits: Tensor, scores: Tensor | None) -> None:
        from hazardseg.visualize import prediction_panel

        for i in range(min(len(batch["name"]), self.num_panels - len(self.panels))):
            panel, miou = prediction_panel(
                batch["image"][i].cpu(), batch["mask"][i].cpu(), logits[i].detach().float().cpu(), self.num_classes,
                str(batch["name"][i]), self.ignore_index, self.anomaly_index,
                None if scores is None else scores[i].detach().cpu(),
            )
            self.panels.append((str(batch["name"][i]), panel, miou))

    def on_test_epoch_end(self) -> None:
        results = self._log_segmentation(self.test_metrics, "test/")
        anomaly: dict[str, float] = {}
        for name in self.scorers:
            pooled = self._compute_anomaly(self.anomaly_metrics[name], name)
            per_image = self._compute_anomaly(self.image_anomaly_metrics[name], name)
            anomaly.update({f"test/{name}/{key}": value for key, value in pooled.items()})
            anomaly.update({f"test/{name}/per_image/{key}": value for key, value in per_image.items()})
        if anomaly:
            self.log_dict(anomaly, sync_dist=True)  # values are already reduced; averaging equal values is a no-op
        self.test_results = {**results, **anomaly}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        from hazardseg.config import instantiate

        cfg = self.optim_cfg
        optimizer = instantiate(cfg["optimizer"], key="optim.optimizer")(self._param_groups(cfg))
        result: dict[str, Any] = {"optimizer": optimizer}
        if cfg.get("scheduler") is not None:
            scheduler = instantiate(cfg["scheduler"], key="optim.scheduler")(optimizer)
            result["lr_scheduler"] = {
                "scheduler": scheduler,
                "monitor": cfg.get("monitor", "val/miou"),
                "interval": cfg.get("interval", "epoch"),
                "frequency": int(cfg.get("frequency", 1)),
            }
        return result

    def _param_groups(self, cfg) -> list[dict]:
        # Fine-tuning recipes use a lower LR for a pretrained encoder than for the fresh decoder/heads.
        scale = float(cfg.get("encoder_lr_scale", 1.0))
        base_lr = float(cfg["optimizer"]["lr"])
        encoder = {id(p) for p in self.net.encoder.parameters()}
        enc = [p for p in self.net.parameters() if id(p) in encoder and p.requires_grad]
        rest = [p for p in self.net.parameters() if id(p) not in encoder and p.requires_grad]
        groups = [{"params": rest, "lr": base_lr}]
        if enc:
            groups.append({"params": enc, "lr": base_lr * scale})
        return groups

    # ------------------------------------------------------------------ checkpoint metadata
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hazardseg"] = self.checkpoint_meta

    # ------------------------------------------------------------------ helpers
    def _segmentation_metrics(self, prefix: str) -> MetricCollection:
        # MulticlassJaccardIndex accumulates a confusion matrix, i.e. dataset-level IoU (the papers'
        # definition), not a mean of per-image IoUs. average=None keeps per-class values.
        return MetricCollection(
            {
                "iou": MulticlassJaccardIndex(self.num_classes, average="none", ignore_index=METRIC_IGNORE, zero_division=math.nan),
                "pixel_acc": MulticlassAccuracy(self.num_classes, average="micro", ignore_index=METRIC_IGNORE),
            },
            prefix=prefix,
        )

    def _metric_target(self, mask: Tensor) -> Tensor:
        """Pixels that are ignored or anomalous do not count towards mIoU / pixel accuracy."""
        target = mask.clone()
        if self.ignore_index is not None:
            target[mask == self.ignore_index] = METRIC_IGNORE
        if self.anomaly_index is not None:
            target[mask == self.anomaly_index] = METRIC_IGNORE
        return target

    def _log_segmentation(self, metrics: MetricCollection, prefix: str) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        iou = values[f"{prefix}iou"].float()
        # Mean over classes that occur in prediction or ground truth (NaN = empty union), as mmseg does.
        results = {f"{prefix}miou": float(torch.nanmean(iou)), f"{prefix}pixel_acc": float(values[f"{prefix}pixel_acc"])}
        for name, value in zip(self.class_names, iou.tolist()):
            results[f"{prefix}iou/{name}"] = value
        # compute() already reduced the states across ranks, so sync_dist only averages equal values.
        self.log(f"{prefix}miou", results[f"{prefix}miou"], prog_bar=True, sync_dist=True)
        self.log_dict({k: v for k, v in results.items() if k != f"{prefix}miou" and not math.isnan(v)}, sync_dist=True)
        return results

    def _compute_anomaly(self, metric, name: str) -> dict[str, float]:
        if not metric.update_called:
            return {}
        try:
            values = {k: float(v) for k, v in metric.compute().items()}
            if isinstance(metric, AnomalyMetrics):
                self.test_curves[name] = metric.curves()
            return values
        except ValueError as err:  # e.g. no anomaly pixel in the test split
            self.print(f"[hazardseg] anomaly metrics for scorer '{name}' not computed: {err}")
            return {}
        finally:
            metric.reset()

    def _check_finite(self, loss: Tensor, batch: dict, batch_idx: int) -> None:
        if torch.isfinite(loss):
            return
        names = ", ".join(map(str, batch.get("name", [])[:4]))
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at epoch {self.current_epoch}, global step {self.global_step}, "
            f"batch {batch_idx} (images: {names}). The last checkpoint is kept; fix: lower optim.optimizer.lr, "
            f"set trainer.gradient_clip_val=1.0 or trainer.precision=32-true, or check those images."
        )
