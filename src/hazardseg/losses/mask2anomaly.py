"""Mask2Anomaly's mask contrastive loss (Rai et al., "Unmasking Anomalies in Road-Scene Segmentation", ICCV 2023):
``loss=mask2anomaly``.

As ``mask2former/modeling/criterion.py::SetCriterion.loss_ood`` (``ood_loss: margin``) of
shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-Segmentation, per decoder layer:

    score = -max_k s_k                    s at the masks' resolution, the score upsampled to the label size
                                          (bilinear, align_corners=True)
    loss  = 0.5 * (mean_in score^2 + mean_out relu(margin - score)^2)   (the outlier mean only when the
                                                                          batch has outlier pixels)

with margin 1: inliers are pulled to a confident class (score 0), pasted outliers away from every class.
Since score <= 0 < margin, the outlier term always pulls, as written there. Ignored pixels count in
neither mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from hazardseg.losses.base import LossTerm, inliers, masked_mean, outliers
from hazardseg.losses.mask_classification import known_classes, query_layers, semantic_at_mask_resolution, to_label_size


class MaskContrastiveLoss(LossTerm):
    """Margin loss on ``-max_k s_k`` of inlier and pasted-outlier pixels, summed over decoder layers."""

    reads_queries = True

    def __init__(self, weight: float = 1.0, margin: float = 1.0, deep_supervision: bool = True):
        super().__init__(weight, output="class_logits")
        self.margin = float(margin)
        self.deep_supervision = bool(deep_supervision)

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        is_in, is_out = inliers(target), outliers(target)
        k = known_classes(outputs)
        total = 0.0
        for class_logits, mask_logits in query_layers(outputs, self.deep_supervision):
            s = semantic_at_mask_resolution(class_logits, mask_logits, k)
            score = to_label_size(-s.max(1).values, target.shape[-2:])
            loss = masked_mean(score ** 2, is_in)
            if bool(is_out.any()):
                loss = loss + masked_mean(F.relu(self.margin - score) ** 2, is_out)
            total = total + 0.5 * loss
        return total

    def extra_repr(self) -> str:
        return f"weight={self.weight}, margin={self.margin}, deep_supervision={self.deep_supervision}"
