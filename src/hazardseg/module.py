"""``Segmenter``: the LightningModule that trains a segmentation net and produces anomaly maps.

The module owns what a deployed detector is made of: the network, its loss and optimiser, and the
anomaly scorers. Everything that *evaluates* (fitting scorer statistics, anomaly metrics, panels,
submission files) lives in Lightning callbacks (:mod:`hazardseg.callbacks`), which read what
``test_step`` returns: ``{"outputs": network outputs, "scores": {scorer: (N, h, w) map}}``, score maps
at the size of ``batch["mask"]``. Scorers are post-hoc: the network runs once per test batch and
every scorer reads the same outputs, so comparing five scorers costs one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from hazardseg.data.labels import IGNORE_LABEL, LabelSpec
from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.maps import resize

# Scheduler arguments that mean "length of the run" (OneCycleLR, PolynomialLR / LinearLR, CosineAnnealingLR).
RUN_LENGTH_KEYS = ("total_steps", "total_iters", "T_max")
METRIC_IGNORE = IGNORE_LABEL  # label used inside the metrics for "not scored" (dataset ignore + anomaly pixels)


class NonFiniteLossError(HazardsegError):
    """Training diverged (NaN/inf loss)."""


class Segmenter(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optim: Mapping[str, Any] | DictConfig,
        num_classes: int,
        class_names: list[str] | None = None,
        labels: LabelSpec | None = None,
        scorers: Mapping[str, nn.Module] | None = None,
        checkpoint_meta: Mapping[str, Any] | None = None,
    ):
        """``num_classes`` / ``class_names``: the classes the network predicts (its training data's).
        ``labels``: what the masks of the data it is tested on mean (:class:`~hazardseg.data.labels.LabelSpec`;
        default: the model's classes, no ignore value, no anomaly) -- a test-only benchmark has no classes."""
        super().__init__()
        self.net = net
        self.loss = loss
        self.optim_cfg = optim
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.labels = labels if labels is not None else LabelSpec(tuple(self.class_names))
        # A plain dict (not a ModuleDict) keeps scorer statistics out of the model checkpoint: they are
        # cached per checkpoint by the ScorerFitting callback, and a scorer sweep must load any checkpoint.
        self.scorers: dict[str, nn.Module] = dict(scorers or {})
        self.checkpoint_meta = dict(checkpoint_meta or {})
        # Smallest training batch the network can take (2 for BatchNorm after global pooling, set by the run's
        # check stage); smaller batches (from skipped samples) are skipped.
        self.min_train_batch = 1
        self._warned_small_batch = False
        self.val_metrics = self._segmentation_metrics("val/")
        self.test_metrics = self._segmentation_metrics("test/")

    # ------------------------------------------------------------------ forward / steps
    def forward(self, image: Tensor) -> dict[str, Any]:
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        if batch["image"].shape[0] < self.min_train_batch:
            # Only with data.skip_bad_samples (a batch shrank after dropping unreadable images) on a model
            # whose BatchNorm after global pooling cannot train on one image: skip the step, say so once.
            if not self._warned_small_batch:
                self.print(f"[hazardseg] skipping a training batch of {batch['image'].shape[0]} image(s) "
                           f"(the model needs {self.min_train_batch}; unreadable samples were dropped)")
                self._warned_small_batch = True
            return None
        outputs = self(batch["image"])
        terms = self.loss(outputs, batch)
        self._check_finite(terms["loss"], batch, batch_idx)
        bs = batch["image"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/loss_{name}", value, batch_size=bs)
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        outputs = self(batch["image"])
        self.val_metrics.update(outputs["logits"].argmax(1), self._metric_target(batch["mask"]))
        return {"outputs": outputs}  # read by callbacks (ValidationAnomaly: val proxy anomaly metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_segmentation(self.val_metrics, "val/")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        outputs = self(batch["image"])
        mask = batch["mask"]
        if self.labels.semantic:
            self.test_metrics.update(outputs["logits"].argmax(1), self._metric_target(mask))
        scores = {name: resize(scorer(outputs), mask.shape[-2:]) for name, scorer in self.scorers.items()}
        return {"outputs": outputs, "scores": scores}

    def on_test_start(self) -> None:
        for scorer in self.scorers.values():
            scorer.to(self.device).eval()

    on_validation_start = on_predict_start = on_test_start  # scorers read in Trainer.validate (calibration), predict

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """``predict.py``: class logits and every scorer's map at the network's input size (the writer brings them
        to each frame's own size). On the CPU ``scores`` is a function that computes the maps: the writer calls it in
        its worker thread, beside the next batch's forward pass instead of before it (1280x720 frames, 2 cores: 0.80 ->
        0.86-0.91 of the bare forward pass, ``bench/README.md``); on an accelerator, where scoring takes milliseconds,
        the maps themselves."""
        outputs = self(batch["image"])
        scorers = dict(self.scorers)

        def scores() -> dict[str, Tensor]:
            return {name: scorer(outputs) for name, scorer in scorers.items()}

        return {"logits": outputs["logits"], "scores": scores if self.device.type == "cpu" else scores()}

    def on_test_epoch_end(self) -> None:
        if self.test_metrics["iou"].update_called:
            self._log_segmentation(self.test_metrics, "test/")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        cfg = self.optim_cfg
        optimizer = _build("optim.optimizer", cfg["optimizer"], self._param_groups(cfg))
        result: dict[str, Any] = {"optimizer": optimizer}
        if cfg.get("scheduler") is not None:
            scheduler = _build("optim.scheduler", self._run_scheduler_cfg(cfg, optimizer), optimizer)
            monitor, interval = cfg.get("monitor", "val/miou"), cfg.get("interval", "epoch")
            frequency = int(cfg.get("frequency", 1))
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            if plateau and interval == "epoch" and str(monitor).startswith("val/"):
                # A plateau scheduler reads a validation metric, which exists only on epochs that validate
                # (trainer.check_val_every_n_epoch): step it on exactly those epochs, so its patience counts
                # validations and Lightning never asks for a metric that was not computed.
                frequency = math.lcm(frequency, int(getattr(self._trainer, "check_val_every_n_epoch", None) or 1))
            result["lr_scheduler"] = {"scheduler": scheduler, "monitor": monitor, "interval": interval, "frequency": frequency}
        return result

    def _run_scheduler_cfg(self, cfg, optimizer) -> dict:
        """Schedules over the whole run (OneCycleLR, PolynomialLR, ...) with their length or peak LR left
        ``null`` get this run's values: the number of scheduler steps (optimizer steps for
        ``interval: step``, epochs for ``interval: epoch``) and each parameter group's LR (so that
        ``encoder_lr_scale`` holds). A config cannot know the steps per epoch of a dataset."""
        sched = dict(cfg["scheduler"])
        trainer = self._trainer  # None in the dry run before training (hazardseg.run.checks.preflight): any length will do
        for key in RUN_LENGTH_KEYS:
            if key in sched and sched[key] is None:
                per_step = cfg.get("interval", "epoch") == "step"
                if trainer is None:
                    sched[key] = 1
                else:
                    sched[key] = int(trainer.estimated_stepping_batches) if per_step else int(trainer.max_epochs)
        if "max_lr" in sched and sched["max_lr"] is None:
            sched["max_lr"] = [group["lr"] for group in optimizer.param_groups]
            sched["_convert_"] = "all"  # a plain list: OneCycleLR divides its items
        return sched

    def _param_groups(self, cfg) -> list[dict]:
        # Fine-tuning recipes use a lower LR for a pretrained encoder than for the fresh decoder/heads.
        scale = float(cfg.get("encoder_lr_scale", 1.0))
        base_lr = float(cfg["optimizer"]["lr"])
        encoder = {id(p) for p in self.net.param_groups()["encoder"]}
        enc = [p for p in self.net.parameters() if id(p) in encoder and p.requires_grad]
        rest = [p for p in self.parameters() if id(p) not in encoder and p.requires_grad]
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
            compute_groups=False,
        )

    def _metric_target(self, mask: Tensor) -> Tensor:
        """Pixels that are ignored, anomalous or pasted outliers do not count towards mIoU / pixel accuracy."""
        return self.labels.metric_target(mask)

    def _log_segmentation(self, metrics: MetricCollection, prefix: str) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        iou = values[f"{prefix}iou"].float()
        # Mean over classes that occur in prediction or ground truth (NaN = empty union), as mmseg does.
        results = {f"{prefix}miou": float(torch.nanmean(iou)), f"{prefix}pixel_acc": float(values[f"{prefix}pixel_acc"])}
        for name, value in zip(self.class_names, iou.tolist()):
            results[f"{prefix}iou/{name}"] = value
        # compute() already reduced the states across ranks, so sync_dist only averages equal values.
        self.log(f"{prefix}miou", as_float64(results)[f"{prefix}miou"], prog_bar=True, sync_dist=True)
        self.log_dict(as_float64({k: v for k, v in results.items() if k != f"{prefix}miou" and not math.isnan(v)}), sync_dist=True)
        return results

    def _check_finite(self, loss: Tensor, batch: dict, batch_idx: int) -> None:
        if torch.isfinite(loss):
            return
        names = ", ".join(map(str, batch.get("name", [])[:4]))
        raise NonFiniteLossError(
            f"training loss is {loss.item()} at epoch {self.current_epoch}, global step {self.global_step}, "
            f"batch {batch_idx} (images: {names}). The last checkpoint is kept; fix: lower optim.optimizer.lr, "
            f"set trainer.gradient_clip_val=1.0 or trainer.precision=32-true, or check those images."
        )


def _build(key: str, cfg: Any, *args: Any) -> Any:
    """Instantiate a ``_partial_`` optimiser/scheduler entry and call it; both steps fail in one line."""
    from hazardseg.config import instantiate

    factory = instantiate(cfg, key=key)
    try:
        return factory(*args)
    except (TypeError, ValueError) as err:  # e.g. torch's "Invalid learning rate: -1"
        raise ConfigError(f"{key}: {cfg.get('_target_')} refuses its arguments ({err}). Fix: correct {key}.*") from None


def as_float64(values: Mapping[str, float]) -> dict[str, Tensor]:
    """Lightning logs Python floats as float32; metric values keep their float64 digits in results.json."""
    return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}
