"""RbA's outlier loss (Nayal et al., "RbA: Segmenting Unknown Regions Rejected by All", ICCV 2023): ``loss=rba``.

As ``mask2former/modeling/criterion.py::SetCriterion.outlier_loss`` of NazirNayal8/RbA with the settings of
``ckpts/swin_b_1dl_rba_ood_coco/config.yaml`` (OUTLIER_LOSS_TARGET nls, SCORE_NORM tanh, OUTLIER_LOSS_FUNC
squared_hinge, INLIER_UPPER_THRESHOLD 0, OUTLIER_LOWER_THRESHOLD 5, OUTLIER_WEIGHT 1), per decoder layer:

    score  = -sum_k tanh(s_k)             s at the masks' resolution, then the score upsampled to the label
                                          size (bilinear, align_corners=True)
    loss   = mean_in relu(score - t_in)^2                              when the batch has no outlier pixel
    loss   = 0.5 * (mean_in relu(score - t_in)^2 + mean_out relu(t_out - score)^2)   otherwise

Reproduced as written, including two consequences worth knowing: since s >= 0, the score is <= 0, so the
inlier term is inactive at t_in = 0 (it never has a gradient), and the outlier term always pulls
(relu(5 - score) >= 5 for every outlier pixel). The factor 0.5 appears only with outliers, as there.
Ignored pixels (255) count in neither mean.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hazardseg.losses.base import masked_mean
from hazardseg.losses.mask_classification import QueryOutlierLoss


class RbAOutlierLoss(QueryOutlierLoss):
    """Squared hinge on the RbA score of inlier and pasted-outlier pixels, summed over decoder layers."""

    def __init__(self, weight: float = 1.0, inlier_threshold: float = 0.0, outlier_threshold: float = 5.0,
                 deep_supervision: bool = True):
        super().__init__(weight, deep_supervision)
        self.inlier_threshold = float(inlier_threshold)
        self.outlier_threshold = float(outlier_threshold)

    def score(self, s: Tensor) -> Tensor:
        return -s.tanh().sum(1)

    def layer_loss(self, score: Tensor, is_in: Tensor, is_out: Tensor) -> Tensor:
        loss = masked_mean(F.relu(score - self.inlier_threshold) ** 2, is_in)
        if bool(is_out.any()):
            loss = 0.5 * (loss + masked_mean(F.relu(self.outlier_threshold - score) ** 2, is_out))
        return loss

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, inlier_threshold={self.inlier_threshold}, outlier_threshold={self.outlier_threshold}, "
                f"deep_supervision={self.deep_supervision}")
