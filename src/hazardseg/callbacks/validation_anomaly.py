"""Anomaly metrics on the *validation* proxy split, for model selection and hyperparameter search.

The test split must never choose hyperparameters. When the datamodule has a validation anomaly proxy
(``data.val_outliers``: outliers pasted into val images, :mod:`hazardseg.data.proxy`), this callback
scores the val images with every configured scorer that needs no fitted statistics (MSP, max logit,
entropy, energy, head-based scorers) and logs pooled ``val/<scorer>/{aupr,auroc,fpr95}`` each
validation epoch; ``objective=val/<scorer>/aupr`` then reads them. Scorers with fitted statistics (SML)
are left out: refitting them every epoch would cost a pass over the training split.
Anomaly = pasted pixels (``OUTLIER_LABEL``) or the dataset's anomaly label; ignore pixels are not scored
(``pl_module.labels``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from hazardseg.maps import resize
from hazardseg.metrics import AnomalyMetrics
from hazardseg.metrics.names import ANOMALY
from hazardseg.module import as_float64


def validation_scorers(pl_module: L.LightningModule) -> dict[str, nn.Module]:
    """The scorers the validation proxy can evaluate: those without fitted statistics."""
    return {name: s for name, s in getattr(pl_module, "scorers", {}).items() if not getattr(s, "requires_fit", False)}


def has_validation_anomalies(datamodule) -> bool:
    return getattr(datamodule, "val_outliers", None) is not None


class ValidationAnomaly(L.Callback):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.metrics = nn.ModuleDict()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        active = self.enabled and not trainer.sanity_checking and has_validation_anomalies(trainer.datamodule)
        scorers = validation_scorers(pl_module) if active else {}
        self.metrics = nn.ModuleDict({name: AnomalyMetrics() for name in scorers}).to(pl_module.device)
        for scorer in scorers.values():
            scorer.to(pl_module.device).eval()

    def on_validation_batch_end(self, trainer, pl_module, outputs: Any, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.metrics or not isinstance(outputs, dict) or "outputs" not in outputs:
            return
        mask, labels = batch["mask"], pl_module.labels
        is_anomaly, valid = labels.is_anomaly(mask, outliers=True), labels.valid(mask)
        for name, metric in self.metrics.items():
            scores = resize(pl_module.scorers[name](outputs["outputs"]).detach(), mask.shape[-2:])
            metric.update(scores, is_anomaly, valid)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {}
        for name, metric in self.metrics.items():
            if metric.update_called:
                try:
                    values.update({f"val/{name}/{k}": v for k, v in metric.compute().items() if k in ANOMALY})
                except ValueError as err:  # no pasted pixel at all (e.g. probability 0)
                    pl_module.print(f"[hazardseg] val anomaly metrics for '{name}' not computed: {err}")
            metric.reset()
        if values:
            pl_module.log_dict(as_float64({k: float(v) for k, v in values.items()}), sync_dist=True)
