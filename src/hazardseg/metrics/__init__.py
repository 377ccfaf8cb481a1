"""Evaluation metrics."""

from hazardseg.metrics.anomaly import AnomalyMetrics, PerImageAnomalyMetrics
from hazardseg.metrics.benchmark import BenchmarkEvaluator, upsample_scores
from hazardseg.metrics.smiyc import COMPONENT_FILTERS, SmiycComponentMetric, SmiycPixelMetric
from hazardseg.metrics.submission import Float16Encoder, read_score_map, submission_path, write_score_map

__all__ = [
    "COMPONENT_FILTERS", "AnomalyMetrics", "BenchmarkEvaluator", "Float16Encoder", "PerImageAnomalyMetrics",
    "SmiycComponentMetric", "SmiycPixelMetric", "read_score_map", "submission_path", "upsample_scores",
    "write_score_map",
]  # fmt: skip
