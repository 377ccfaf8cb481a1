"""DenseHybrid: an unnormalised data likelihood from the logits plus a dataset-posterior head.

Paper: Grcić, Bevandić, Šegvić, "DenseHybrid: Hybrid Anomaly Detection for Dense Open-set
Recognition", ECCV 2022. Code: github.com/matejgrcic/DenseHybrid
``experiments/semseg_negatives_joint_th.py`` (training) and ``evaluations/evaluations.py::THKLOODEvaluation``
(score)::

    lse = logsumexp(logits, 1) * label_ood
    loss_ood = (lse + reg.detach()).sum() / n_outlier_pixels      # reg.detach(): no gradient
    loss_th = nll_loss(log_softmax(logits_ood, 1), label_ood)     # 2-way: inlier / outlier
    loss = loss_seg + beta * loss_ood + beta * 10 * loss_th        # beta = 0.03

    score = -logsumexp(logits, 1) + log softmax(logits_ood, 1)[:, 1]

``logsumexp(logits)`` is the network's unnormalised log-density ``log p^(x)`` of a pixel, pushed down on
pasted outliers (:class:`OutlierLogLikelihood`); the ``ood`` head learns the dataset posterior
``P(outlier | x)`` (:class:`DatasetPosterior`); the score (``scorer=densehybrid``) adds both logs.

Deviations, and why: the head has one logit ``h`` (``P(outlier|x) = sigmoid(h)``) instead of two softmaxed
ones; the model class is the same (a 2-way softmax depends only on the difference of its logits). Its
BCE is averaged over labelled pixels (known classes and outliers); the reference also counts void
pixels as inliers, which here would include crop padding. The detached ``reg`` term is a constant and
is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.losses.base import LossTerm, as_float, inliers, masked_mean, outliers


class OutlierLogLikelihood(LossTerm):
    """Mean of ``logsumexp(logits)`` over outlier pixels (lowers the unnormalised likelihood there)."""

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        lse = torch.logsumexp(as_float(outputs[self.output]), dim=1)
        return masked_mean(lse, outliers(batch["mask"]))


class DatasetPosterior(LossTerm):
    """Binary cross-entropy of the one-logit ``ood`` head: outlier pixels 1, known-class pixels 0."""

    def __init__(self, weight: float = 0.3, output: str = "ood"):
        super().__init__(weight, output)

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        logit = as_float(outputs[self.output])[:, 0]
        is_out = outliers(target)
        bce = F.binary_cross_entropy_with_logits(logit, is_out.to(logit.dtype), reduction="none")
        return masked_mean(bce, is_out | inliers(target))
