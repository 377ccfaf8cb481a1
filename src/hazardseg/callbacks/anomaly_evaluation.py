"""Anomaly metrics of every scorer on the test split, as a callback reading ``test_step``'s score maps.

Pooled pixel-level AUPR / AUROC / FPR95 (:class:`~hazardseg.metrics.AnomalyMetrics`) and, with
``per_image``, the original StreetHazards per-image protocol. Values are logged through the module
(``test/<scorer>/<metric>``, ``test/<scorer>/per_image/<metric>``), so they reach every logger and come
back from ``Trainer.test``; PR/ROC curves go to loggers that can show them (the (run, scorer) table is
``hazardseg.report.finish_run``'s) and come back through the results channel (``curves``).
Each pooled metric has its binning error bound beside it (``test/<scorer>/<metric>_error_bound``,
:meth:`~hazardseg.metrics.AnomalyMetrics.error_bounds`); a bound over 1e-4 is said in one line (score maps
concentrated near one value, which a user's own scorer can produce).
Anomaly and scored pixels: ``pl_module.labels`` (:class:`~hazardseg.data.labels.LabelSpec`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from hazardseg.callbacks.base import EvaluationCallback
from hazardseg.console import say
from hazardseg.metrics import AnomalyMetrics, PerImageAnomalyMetrics
from hazardseg.metrics.anomaly import pixels_where
from hazardseg.metrics.names import ANOMALY, ERROR_BOUND, ERROR_BOUND_WARNING
from hazardseg.module import as_float64


class AnomalyEvaluation(EvaluationCallback):
    results_key = "curves"  # scorer -> PR / ROC curve points (the sweep report's PR plot)

    def __init__(self, per_image: bool = True, curves: bool = True):
        self.per_image = per_image
        self.curves = curves
        self.pooled = nn.ModuleDict()
        self.images = nn.ModuleDict()
        self.curve_points: dict[str, dict] = {}

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        names = list(pl_module.scorers) if pl_module.labels.anomaly_values else []
        self.pooled = nn.ModuleDict({n: AnomalyMetrics() for n in names}).to(pl_module.device)
        self.images = nn.ModuleDict({n: PerImageAnomalyMetrics() for n in names if self.per_image}).to(pl_module.device)
        self.curve_points = {}

    def on_test_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.pooled:
            return
        mask, labels = batch["mask"], pl_module.labels
        is_anomaly, valid = labels.is_anomaly(mask), labels.valid(mask)
        scores = outputs["scores"]
        if valid is not None and all(t.device.type == "cpu" for t in (mask, *scores.values())):
            # the scored pixels of each image selected once for the pooled and the per-image metric, and its labels
            # once for every scorer (the metrics would each select them again; a selection on a GPU would sync)
            for i in range(mask.shape[0]):
                keep = valid[i].reshape(-1).numpy()
                self._update({name: pixels_where(s[i].float(), keep)[None] for name, s in scores.items()},
                             pixels_where(is_anomaly[i], keep)[None], None)
            return
        self._update(scores, is_anomaly, valid)

    def _update(self, scores: dict[str, Any], is_anomaly, valid) -> None:
        for name, values in scores.items():
            self.pooled[name].update(values, is_anomaly, valid)
            if name in self.images:
                self.images[name].update(values, is_anomaly, valid)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values: dict[str, float] = {}
        for name, metric in self.pooled.items():
            values.update({f"test/{name}/{k}": v for k, v in _compute(metric, name, pl_module).items()})
            if metric.update_called and f"test/{name}/auroc" in values:
                values.update(_error_bounds(metric, name, trainer))
                self.curve_points[name] = metric.curves()  # the record stage saves them for the sweep report's PR plot
                for logger in trainer.loggers if self.curves else ():
                    if hasattr(logger, "log_curves"):
                        logger.log_curves(f"test/{name}", self.curve_points[name])
            metric.reset()
        for name, metric in self.images.items():
            values.update({f"test/{name}/per_image/{k}": v for k, v in _compute(metric, name, pl_module).items()})
            metric.reset()
        if values:
            pl_module.log_dict(as_float64(values), sync_dist=True)  # already reduced across ranks; averaging equal values is a no-op

    def results(self) -> dict[str, dict]:
        return self.curve_points


def _error_bounds(metric: AnomalyMetrics, name: str, trainer: L.Trainer) -> dict[str, float]:
    """``test/<scorer>/<metric>_error_bound`` of the (DDP-synced) state; one line when a bound is large."""
    with metric.sync_context():  # compute() has unsynced the state again: bound what it computed on
        bounds = metric.error_bounds()
    large = {k: v for k, v in bounds.items() if v > ERROR_BOUND_WARNING}
    if large and trainer.is_global_zero:
        shown = ", ".join(f"{k} {v:.1e}" for k, v in large.items())
        say(f"[hazardseg] warning: scorer '{name}': binning error bound above {ERROR_BOUND_WARNING:g} ({shown}): its scores "
            f"are concentrated near one value; spread them (e.g. a log or rank transform) for exact metrics")
    return {f"test/{name}/{k}{ERROR_BOUND}": float(v) for k, v in bounds.items()}


def scorer_rows(metrics: dict[str, Any], scorers: list[str]) -> list[dict[str, Any]]:
    """One row per scorer: pooled and per-image AUPR / AUROC / FPR95, the test mIoU and, on a test-only
    benchmark, its leaderboard metrics under their benchmark names (:mod:`~hazardseg.callbacks.benchmark_evaluation`)."""
    from hazardseg.callbacks.benchmark_evaluation import benchmark_row

    rows = []
    for name in scorers:
        row: dict[str, Any] = {"scorer": name}
        row.update({key: metrics.get(f"test/{name}/{key}") for key in ANOMALY})
        row.update({f"per_image_{key}": metrics.get(f"test/{name}/per_image/{key}") for key in ANOMALY})
        row.update({f"{key}{ERROR_BOUND}": metrics[f"test/{name}/{key}{ERROR_BOUND}"] for key in ANOMALY
                    if f"test/{name}/{key}{ERROR_BOUND}" in metrics})
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
