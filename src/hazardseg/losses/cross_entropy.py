"""Cross-entropy over the known classes (optionally focal), and the inlier-entropy regulariser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.losses.base import IGNORE_LABEL, LossTerm, as_float, class_target, inliers, masked_mean


def inverse_sqrt_weights(fractions: Tensor) -> Tensor:
    """``1 / sqrt(f_c)``: the softened inverse frequency of class-balanced losses (e.g. Mahajan et al.,
    ECCV 2018; Cui et al., CVPR 2019 discuss the family)."""
    return fractions.rsqrt()


def enet_weights(fractions: Tensor, c: float = 1.02) -> Tensor:
    """``1 / ln(c + p_c)`` with ``c = 1.02`` (ENet, Paszke et al. 2016, section 5.2): bounded for rare classes."""
    return 1.0 / torch.log(c + fractions)


# Schemes for ``class_weights: <name>``, computed from the TRAINING split's class fractions.
CLASS_WEIGHT_SCHEMES = {"inverse_sqrt": inverse_sqrt_weights, "enet": enet_weights}


def balanced_class_weights(scheme: str, counts: Sequence[int]) -> Tensor:
    """Weights of ``scheme`` for per-class pixel ``counts``, scaled so that the average weight of a
    training pixel is 1 (the loss keeps its scale). A class absent from the training split gets the
    largest weight (it has no pixels to weigh there; a finite value keeps label smoothing finite)."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    if counts_t.sum() <= 0:
        raise ConfigError(f"class_weights={scheme}: the training split has no labelled pixels")
    fractions = counts_t / counts_t.sum()
    present = fractions > 0
    weights = torch.zeros_like(fractions)
    weights[present] = CLASS_WEIGHT_SCHEMES[scheme](fractions[present])
    weights[~present] = weights[present].max()
    return (weights / (fractions * weights).sum()).float()


class CrossEntropy(LossTerm):
    """Pixel cross-entropy on ``outputs[output]`` (``logits``, or e.g. the ``aux`` head).

    Ignored and outlier pixels do not count. ``focal_gamma > 0`` gives the focal loss
    ``(1 - p_t)^gamma * CE`` (Lin et al., ICCV 2017), averaged over the counted pixels.
    ``class_weights``: null, one weight per class, or a scheme name (``inverse_sqrt``, ``enet``)
    whose weights come from the training split's class distribution (:meth:`set_class_counts`, called
    by the training pipeline with the class-distribution report).
    """

    def __init__(self, weight: float = 1.0, output: str = "logits", class_weights: Sequence[float] | str | None = None,
                 label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(weight, output)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing}: expected 0 <= label_smoothing < 1")
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.weight_scheme = class_weights if isinstance(class_weights, str) else None
        if self.weight_scheme is not None and self.weight_scheme not in CLASS_WEIGHT_SCHEMES:
            raise ConfigError(f"class_weights={class_weights!r}: expected null, a list of per-class weights, or one of "
                              f"{sorted(CLASS_WEIGHT_SCHEMES)}")
        weights = None if class_weights is None or self.weight_scheme else torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def check(self, num_classes: int) -> None:
        if self.class_weights is not None and self.class_weights.numel() != num_classes:
            raise ConfigError(f"class_weights={self.class_weights.tolist()}: {self.class_weights.numel()} values, but the dataset "
                              f"has {num_classes} classes. Fix: give one weight per class, or null")

    @property
    def needs_class_counts(self) -> bool:
        return self.weight_scheme is not None

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Compute the scheme's weights from the training split's per-class pixel counts."""
        if self.weight_scheme is not None:
            self.class_weights = balanced_class_weights(self.weight_scheme, counts)  # a buffer: moves with the module

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        logits, target = as_float(outputs[self.output]), class_target(batch["mask"])
        if self.weight_scheme is not None and self.class_weights is None:
            raise ConfigError(f"class_weights={self.weight_scheme}: the weights come from the training split's class "
                              f"counts; call set_class_counts(counts) first (the fit stage, hazardseg.run.fit, does)")
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ConfigError(f"class_weights has {self.class_weights.numel()} values but the model has {logits.shape[1]} classes")
        if not self.focal_gamma:
            return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_LABEL,
                                   label_smoothing=self.label_smoothing)
        ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_LABEL, reduction="none")
        pt = torch.exp(-F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL, reduction="none"))
        return masked_mean((1 - pt) ** self.focal_gamma * ce, target != IGNORE_LABEL)


class InlierEntropy(LossTerm):
    """Mean softmax entropy over known-class pixels: with a positive weight it makes inliers confident
    (the ``fl+h`` recipe of the distance-head StreetHazards systems, gamma 0.1)."""

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        logp = F.log_softmax(as_float(outputs[self.output]), dim=1)
        entropy = -(logp.exp() * logp).sum(1)
        return masked_mean(entropy, inliers(batch["mask"]))
