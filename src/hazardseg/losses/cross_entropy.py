"""Cross-entropy over the known classes (optionally focal), and the inlier-entropy regulariser."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.losses.base import IGNORE_LABEL, LossTerm, as_float, class_target, inliers, masked_mean


class CrossEntropy(LossTerm):
    """Pixel cross-entropy on ``outputs[output]`` (``logits``, or e.g. the ``aux`` head).

    Ignored and outlier pixels do not count. ``focal_gamma > 0`` gives the focal loss
    ``(1 - p_t)^gamma * CE`` (Lin et al., ICCV 2017), averaged over the counted pixels.
    """

    def __init__(self, weight: float = 1.0, output: str = "logits", class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, focal_gamma: float = 0.0):
        super().__init__(weight, output)
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={label_smoothing}: expected 0 <= label_smoothing < 1")
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        weights = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def check(self, num_classes: int) -> None:
        if self.class_weights is not None and self.class_weights.numel() != num_classes:
            raise ConfigError(f"class_weights={self.class_weights.tolist()}: {self.class_weights.numel()} values, but the dataset "
                              f"has {num_classes} classes. Fix: give one weight per class, or null")

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        logits, target = as_float(outputs[self.output]), class_target(batch["mask"])
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
