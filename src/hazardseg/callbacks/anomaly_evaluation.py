"""Anomaly metrics of every scorer on the test split, as a callback reading ``test_step``'s score maps.

Pooled pixel-level AUPR / AUROC / FPR95 (:class:`~hazardseg.metrics.AnomalyMetrics`) and, with
``per_image``, the original StreetHazards per-image protocol. Values are logged through the module
(``test/<scorer>/<metric>``, ``test/<scorer>/per_image/<metric>``), so they reach every logger and come
back from ``Trainer.test``; PR/ROC curves go to loggers that can show them (the (run, scorer) table is
``hazardseg.report.finish_run``'s).
Anomaly = mask == ``pl_module.anomaly_index``; pixels == ``pl_module.ignore_index`` are not scored.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from hazardseg.metrics import AnomalyMetrics, PerImageAnomalyMetrics
from hazardseg.module import as_float64

ANOMALY_KEYS = ("aupr", "auroc", "fpr95")


class AnomalyEvaluation(L.Callback):
    def __init__(self, per_image: bool = True, curves: bool = True):
        self.per_image = per_image
        self.curves = curves
        self.pooled = nn.ModuleDict()
        self.images = nn.ModuleDict()
        self.curve_points: dict[str, dict] = {}

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = list(pl_module.scorers) if pl_module.anomaly_index is not None else []
        self.pooled = nn.ModuleDict({n: AnomalyMetrics() for n in names}).to(pl_module.device)
        self.images = nn.ModuleDict({n: PerImageAnomalyMetrics() for n in names if self.per_image}).to(pl_module.device)
        self.curve_points = {}

    def on_test_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.pooled:
            return
        mask = batch["mask"]
        is_anomaly = mask == pl_module.anomaly_index
        valid = None if pl_module.ignore_index is None else mask != pl_module.ignore_index
        for name, scores in outputs["scores"].items():
            self.pooled[name].update(scores, is_anomaly, valid)
            if name in self.images:
                self.images[name].update(scores, is_anomaly, valid)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values: dict[str, float] = {}
        for name, metric in self.pooled.items():
            values.update({f"test/{name}/{k}": v for k, v in _compute(metric, name, pl_module).items()})
            if metric.update_called and f"test/{name}/auroc" in values:
                self.curve_points[name] = metric.curves()  # the pipeline saves them for the sweep report's PR plot
                for logger in trainer.loggers if self.curves else ():
                    if hasattr(logger, "log_curves"):
                        logger.log_curves(f"test/{name}", self.curve_points[name])
            metric.reset()
        for name, metric in self.images.items():
            values.update({f"test/{name}/per_image/{k}": v for k, v in _compute(metric, name, pl_module).items()})
            metric.reset()
        if values:
            pl_module.log_dict(as_float64(values), sync_dist=True)  # already reduced across ranks; averaging equal values is a no-op


def scorer_rows(metrics: dict[str, Any], scorers: list[str]) -> list[dict[str, Any]]:
    """One row per scorer: pooled and per-image AUPR / AUROC / FPR95, the test mIoU and, on a test-only
    benchmark, its leaderboard metrics under their benchmark names (:mod:`~hazardseg.callbacks.benchmark_evaluation`)."""
    from hazardseg.callbacks.benchmark_evaluation import benchmark_row

    rows = []
    for name in scorers:
        row: dict[str, Any] = {"scorer": name}
        row.update({key: metrics.get(f"test/{name}/{key}") for key in ANOMALY_KEYS})
        row.update({f"per_image_{key}": metrics.get(f"test/{name}/per_image/{key}") for key in ANOMALY_KEYS})
        row["test_miou"] = metrics.get("test/miou")
        row.update(benchmark_row(metrics, name))
        rows.append(row)
    return rows


def _compute(metric, name: str, pl_module: L.LightningModule) -> dict[str, float]:
    if not metric.update_called:
        return {}
    try:
        return {k: float(v) for k, v in metric.compute().items()}
    except ValueError as err:  # e.g. no anomaly pixel in the test split
        pl_module.print(f"[hazardseg] anomaly metrics for scorer '{name}' not computed: {err}")
        return {}
