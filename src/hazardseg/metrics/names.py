"""Every metric name hazardseg reports and its direction, declared once (like torchmetrics' ``higher_is_better``).

Callbacks, the results table, the sweep report, the W&B summaries and the sweep objective read these
instead of keeping lists of their own.
"""

from __future__ import annotations

# name -> higher is better
SEGMENTATION = {"miou": True, "pixel_acc": True}
# Pooled pixel-level anomaly metrics (AnomalyMetrics) and the per-image protocol (PerImageAnomalyMetrics).
ANOMALY = {"aupr": True, "auroc": True, "fpr95": False}
# Test-only benchmarks: the leaderboard's metrics under their own names (SMIYC convention; BenchmarkEvaluator).
BENCHMARK = {"AP": True, "FPR95": False, "best_F1": True, "sIoU_gt": True, "PPV": True, "mean_F1": True,
             "F1_25": True, "F1_50": True, "F1_75": True}
# Thresholds reported beside them (no direction: not a quality).
BENCHMARK_THRESHOLDS = ("best_F1_threshold",)
# A scorer's benchmark columns in the results table, in this order.
BENCHMARK_COLUMNS = ("AP", "FPR95", "best_F1", "best_F1_threshold", "sIoU_gt", "PPV", "mean_F1", "F1_25", "F1_50", "F1_75")
# Suffix of the binning error bound that stands beside each pooled anomaly metric (AnomalyMetrics.error_bounds).
ERROR_BOUND = "_error_bound"
# A bound above this is worth a warning: score maps concentrated near one value (one histogram bin).
ERROR_BOUND_WARNING = 1e-4


def higher_is_better(name: str) -> bool | None:
    """Direction of a metric column (``aupr``, ``per_image_fpr95``, ``FPR95``, ``test/msp/auroc``...); None if unknown."""
    key = name.rsplit("/", 1)[-1].removeprefix("per_image_")
    for table in (SEGMENTATION, ANOMALY, BENCHMARK):
        if key in table:
            return table[key]
    return None
