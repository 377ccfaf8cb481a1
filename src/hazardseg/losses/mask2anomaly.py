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

import torch.nn.functional as F
from torch import Tensor

from hazardseg.losses.base import masked_mean
from hazardseg.losses.mask_classification import QueryOutlierLoss


class MaskContrastiveLoss(QueryOutlierLoss):
    """Margin loss on ``-max_k s_k`` of inlier and pasted-outlier pixels, summed over decoder layers."""

    def __init__(self, weight: float = 1.0, margin: float = 1.0, deep_supervision: bool = True):
        super().__init__(weight, deep_supervision)
        self.margin = float(margin)

    def score(self, s: Tensor) -> Tensor:
        return -s.max(1).values

    def layer_loss(self, score: Tensor, is_in: Tensor, is_out: Tensor) -> Tensor:
        loss = masked_mean(score ** 2, is_in)
        if bool(is_out.any()):
            loss = loss + masked_mean(F.relu(self.margin - score) ** 2, is_out)
        return 0.5 * loss

    def extra_repr(self) -> str:
        return f"weight={self.weight}, margin={self.margin}, deep_supervision={self.deep_supervision}"
