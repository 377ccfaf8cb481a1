"""Evaluation metrics."""

from hazardseg.metrics.anomaly import AnomalyMetrics, PerImageAnomalyMetrics

__all__ = ["AnomalyMetrics", "PerImageAnomalyMetrics"]
