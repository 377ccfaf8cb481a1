"""Entropy maximisation on pasted outliers (Meta-OoD; the entropic open-set loss).

Papers: Chan, Rottmann, Gottschalk, "Entropy Maximization and Meta Classification for
Out-of-Distribution Detection in Semantic Segmentation", ICCV 2021 (eq. 3-4);
Dhamija, Günther, Boult, "Reducing Network Agnostophobia", NeurIPS 2018 (entropic open-set loss).
Code: github.com/robin-chan/meta-ood ``ood_training.py`` (``encode_target`` + ``cross_entropy``);
pytorch-ood ``EntropicOpenSetLoss``.

Meta-OoD trains ``(1 - lambda) * CE(inliers) + lambda * l_out`` with
``l_out = -(1/K) sum_c log softmax(l)_c``: the cross-entropy to the uniform distribution, minimal
exactly when the prediction on an outlier pixel has maximal entropy (it equals
``KL(uniform || p) + log K``). Anomalies are then scored by the softmax entropy (``scorer=entropy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.losses.base import IGNORE_LABEL, LossTerm, as_float, outliers

NORMALISATIONS = ("pixels", "outliers")


class OutlierEntropy(LossTerm):
    """``sum over outlier pixels of -(1/K) sum_c log p_c``, divided per ``normalize``.

    Args:
        normalize: ``pixels`` (default, as Meta-OoD's code: its loss is one mean over every labelled
            pixel, so the outlier term is divided by the number of labelled pixels, outliers included,
            and ``weight`` is their lambda) or ``outliers`` (a mean over outlier pixels, as
            pytorch-ood's ``EntropicOpenSetLoss`` with ``reduction="mean"`` restricted to them).

    Deviations from the reference code, and why: Meta-OoD's ``L.mean()`` also divides by K (the mean
    over the class axis of the one-hot-weighted loss) and weights the inlier CE by ``1 - lambda`` inside
    the same mean; here CE is its own term (``loss.terms.ce``, a mean over inlier pixels, weight
    ``1 - lambda``) and the 1/K is kept only in ``l_out``'s definition. With inliers the vast majority of
    labelled pixels the two normalisations agree up to that ratio (~1.05 for our pastes). Meta-OoD
    fine-tunes a Cityscapes-trained network for a few epochs; our recipe trains jointly from the
    start (``loss=meta_ood`` on the default data), the ``experiment=streethazards_meta_ood`` preset too.
    """

    def __init__(self, weight: float = 0.9, output: str = "logits", normalize: str = "pixels"):
        super().__init__(weight, output)
        if normalize not in NORMALISATIONS:
            raise ConfigError(f"normalize={normalize!r}: expected one of {list(NORMALISATIONS)}")
        self.normalize = normalize

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        out = outliers(target)
        uniform_ce = -F.log_softmax(as_float(outputs[self.output]), dim=1).mean(dim=1)  # (N, H, W)
        total = uniform_ce.masked_fill(~out, 0.0).sum()  # zero (with a graph) when the batch has no outlier pixel
        count = out.sum() if self.normalize == "outliers" else (target != IGNORE_LABEL).sum()
        return total / count.clamp_min(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalize={self.normalize!r}"
