"""Void / background (K+1)-th class trained on pasted outliers.

Papers: the "background class" of Dhamija et al., "Reducing Network Agnostophobia", NeurIPS 2018 and
the void-class baseline of Blum et al., "The Fishyscapes Benchmark", IJCV 2021 (an extra class
trained on outlier pixels, scored by its probability); Hendrycks et al., "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022 (anomaly-seg's ``background`` option).
Code: pytorch-ood ``BackgroundClassLoss`` (CE over K+1 outputs, outliers mapped to class K).

The (K+1)-th logit ``v`` comes from a :class:`~hazardseg.models.pixel_head.PixelHead` (``model.heads.void``);
together with ``logits`` it forms a (K+1)-way classifier whose void probability is the anomaly score
(``scorer=void``: ``log p_void``). The (K+1)-way cross-entropy splits exactly into the K-way CE over
known classes (``loss.terms.ce``, unchanged, with its class weights) plus this term, a logistic loss on
``s = v - logsumexp(logits)``:

    inlier of class y:  -log p_y^{K+1}  = CE_K(l, y) + softplus(s)        (= -log(1 - p_void))
    outlier:            -log p_void     =              softplus(-s)

so ``ce`` + ``void`` with equal weights *is* the background-class loss, and the known-class CE keeps
whatever the default recipe configures. Deviation from pytorch-ood: its single mean over all pixels
becomes two means (CE over inliers, this term over inliers and outliers), i.e. identical up to the
pixel-count normalisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.losses.base import LossTerm, as_float, inliers, masked_mean, outliers


def void_margin(logits: Tensor, void: Tensor) -> Tensor:
    """``s = v - logsumexp(logits)``: the log-odds of void against all known classes, (N, H, W)."""
    if void.shape[1] != 1:
        raise ConfigError(f"the void head must have one output channel (out_channels: 1), got {void.shape[1]}")
    return void[:, 0] - torch.logsumexp(logits, dim=1)


class VoidClass(LossTerm):
    """Logistic loss on ``s = v - logsumexp(logits)``: outlier pixels -> void, known-class pixels -> not void.

    ``output`` names the void head (default ``void``); the known-class logits are ``outputs["logits"]``.
    """

    def __init__(self, weight: float = 1.0, output: str = "void"):
        super().__init__(weight, output)

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        s = void_margin(as_float(outputs["logits"]), as_float(outputs[self.output]))
        is_out = outliers(target)
        # softplus(s) = -log(1 - p_void), softplus(-s) = -log p_void: stable for any s (no log of 0).
        loss = torch.where(is_out, F.softplus(-s), F.softplus(s))
        return masked_mean(loss, is_out | inliers(target))
