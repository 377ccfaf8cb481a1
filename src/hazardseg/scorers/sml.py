"""Standardized Max Logits (Jung et al., "Standardizing Max Logits: A Simple yet Effective Approach
for Identifying Unexpected Road Obstacles in Urban-Scene Segmentation", ICCV 2021).

Reference: github.com/shjung13/Standardized-max-logits (``calculate_statistics.py`` and
``network/deepv3.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hazardseg.errors import DataError
from hazardseg.maps import in_bands
from hazardseg.scorers.base import FittedScorer, batch_logits, class_max
from hazardseg.scorers.postprocess import BoundarySuppression, DilatedSmoothing

_STATS = ("class_mean", "class_std", "class_count")


class SML(FittedScorer):
    """Anomaly score ``-(max_c l_c - mean[pred]) / std[pred]``, then optional post-processing.

    ``fit`` estimates, for each class c, the mean and (unbiased, as the reference's ``Tensor.var``)
    std of the max logit over training pixels whose *predicted* class is c. Every pixel counts (the
    reference ignores ground truth), so a batch's ``mask`` is not used. Classes predicted fewer than
    twice get mean 0 / std 1 (with a warning), i.e. they fall back to the plain max logit.

    The standardized value is boundary-suppressed and dilated-smoothed (both on by default, as in the
    paper), then negated so that higher = more anomalous.
    """

    statistics = _STATS
    fit_version = 2  # 2: rarely-predicted classes use pooled statistics
    name = "sml"

    def __init__(
        self,
        boundary_suppression: bool = True,
        dilated_smoothing: bool = True,
        boundary_width: int = 4,
        boundary_iteration: int = 4,
        kernel_size: int = 7,
        sigma: float = 1.0,
        dilation: int = 6,
    ) -> None:
        super().__init__()
        self.suppress = BoundarySuppression(boundary_width, boundary_iteration) if boundary_suppression else None
        self.smooth = DilatedSmoothing(kernel_size, sigma, dilation) if dilated_smoothing else None
        # Empty until fit/load: the number of classes is only known from the data.
        self.register_buffer("class_mean", torch.empty(0))
        self.register_buffer("class_std", torch.empty(0))
        self.register_buffer("class_count", torch.empty(0, dtype=torch.long))

    def _has_statistics(self) -> bool:
        return self.class_mean.numel() > 0

    def accumulate(self, batch: Mapping[str, Any], sums: tuple[Tensor, ...] | None) -> tuple[Tensor, ...]:
        logits = batch_logits(batch, self.name)
        if sums is None:
            sums = _zeros(logits.shape[1], logits.device)
        elif logits.shape[1] != sums[0].numel():
            raise DataError(
                "scorer 'sml'.fit: batches disagree on the number of classes "
                f"({sums[0].numel()} vs {logits.shape[1]})"
            )
        _accumulate(logits, *sums)
        return sums

    def set_statistics(self, count: Tensor, total: Tensor, total_sq: Tensor) -> None:
        n = count.double()
        mean = total / n.clamp_min(1)
        # Unbiased variance from streamed sums; clamp tiny negative round-off.
        var = ((total_sq - n * mean**2) / (n - 1).clamp_min(1)).clamp_min(0)
        rare = count < 2
        # Classes (almost) never predicted on the training split have no statistics of their own. We
        # standardise them with the pooled statistics of all training pixels instead of mean 0 / std 1:
        # a raw max logit (~10) next to standardised ones (~0) would rank those pixels as the least
        # anomalous of all. (The original code assumes every class is predicted somewhere.)
        n_all = n.sum()
        pooled_mean = total.sum() / n_all
        pooled_std = ((total_sq.sum() - n_all * pooled_mean**2) / (n_all - 1).clamp_min(1)).clamp_min(0).sqrt()
        if rare.any():
            warnings.warn(
                f"scorer 'sml': classes {rare.nonzero().flatten().tolist()} were predicted on fewer than 2 training "
                "pixels; using the statistics pooled over all classes for them",
                RuntimeWarning,
                stacklevel=3,
            )
        mean = torch.where(rare, pooled_mean, mean)
        std = torch.where(rare, pooled_std, var.sqrt()).clamp_min(1e-6)  # avoid /0 on constant logits
        device = self.class_mean.device
        self.class_mean = mean.float().to(device)
        self.class_std = std.float().to(device)
        self.class_count = count.to(device)

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        if logits.shape[1] != self.class_mean.numel():
            raise DataError(
                f"scorer 'sml': statistics were fitted for {self.class_mean.numel()} classes but logits have "
                f"{logits.shape[1]}; refit or load matching statistics"
            )
        mean, std = self.class_mean.to(logits.device), self.class_std.to(logits.device)

        def standardised(band: Tensor, max_logit: Tensor, pred: Tensor) -> Tensor:  # per pixel: on bands of rows
            return (max_logit - mean[pred]) / std[pred]

        max_logit, pred = class_max(logits)  # shared with the frame's other scorers
        sml = in_bands(standardised, logits, max_logit, pred)
        if self.suppress is not None:
            sml = self.suppress(sml, pred)
        if self.smooth is not None:
            sml = self.smooth(sml)
        return -sml

    def extra_repr(self) -> str:
        return f"num_classes={self.class_mean.numel()}, fitted={self.is_fitted}"


def _zeros(num_classes: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    long = torch.zeros(num_classes, dtype=torch.long, device=device)
    f64 = torch.zeros(num_classes, dtype=torch.float64, device=device)
    return long, f64, f64.clone()


def _accumulate(logits: Tensor, count: Tensor, total: Tensor, total_sq: Tensor) -> None:
    """Add one batch's per-predicted-class count, sum and sum of squares of the max logit (float64)."""
    max_logit, pred = logits.max(dim=1)
    pred, m = pred.flatten(), max_logit.flatten().double()
    # index_add_ has a deterministic CUDA path (bincount with weights does not).
    count.index_add_(0, pred, torch.ones_like(pred))
    total.index_add_(0, pred, m)
    total_sq.index_add_(0, pred, m * m)

