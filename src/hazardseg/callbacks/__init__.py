"""Lightning callbacks: checkpoint safety, scorer fitting, anomaly metrics, benchmark leaderboard metrics, panels, progress bar.

All are configured in ``conf/callbacks/*.yaml`` and built by :func:`hazardseg.instantiators.instantiate_callbacks`.
"""

from hazardseg.callbacks.anomaly_evaluation import AnomalyEvaluation, scorer_rows
from hazardseg.callbacks.benchmark_evaluation import BenchmarkEvaluation
from hazardseg.callbacks.checkpointing import AtomicCheckpointIO, ModelCheckpoint, PreemptionCheckpoint, RNGStateCheckpoint
from hazardseg.callbacks.outlier_watch import OutlierWatch
from hazardseg.callbacks.panels import PredictionPanels
from hazardseg.callbacks.prediction_writer import PredictionWriter
from hazardseg.callbacks.progress import rich_progress_bar
from hazardseg.callbacks.scorer_fitting import ScorerFitting, weights_fingerprint
from hazardseg.callbacks.threshold_calibration import ThresholdCalibration
from hazardseg.callbacks.validation_anomaly import ValidationAnomaly

__all__ = ["AnomalyEvaluation", "BenchmarkEvaluation", "AtomicCheckpointIO", "ModelCheckpoint", "OutlierWatch", "PredictionPanels", "PredictionWriter", "PreemptionCheckpoint", "RNGStateCheckpoint",
           "ScorerFitting", "ThresholdCalibration", "ValidationAnomaly", "rich_progress_bar", "scorer_rows", "weights_fingerprint"]
