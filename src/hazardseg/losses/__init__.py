"""Loss terms (one file per idea) and the weighted sum that combines them; see :mod:`hazardseg.losses.base`."""

from hazardseg.losses.base import IGNORE_LABEL, OUTLIER_LABEL, CompositeLoss, LossTerm, inliers, masked_mean, outliers
from hazardseg.losses.cross_entropy import CrossEntropy, InlierEntropy
from hazardseg.losses.library_loss import LibraryLoss

__all__ = ["IGNORE_LABEL", "OUTLIER_LABEL", "CompositeLoss", "CrossEntropy", "InlierEntropy", "LibraryLoss", "LossTerm", "inliers",
           "masked_mean", "outliers"]
