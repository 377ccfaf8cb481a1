"""PEBAL: pixel-wise energy-biased abstention learning (its abstention and regularisation terms).

Paper: Tian, Liu, Pang, Chen, Reid, Carneiro, "Pixel-wise Energy-biased Abstention Learning for
Anomaly Segmentation on Complex Urban Driving Scenes", ECCV 2022.
Code: github.com/tianyu0207/PEBAL ``code/losses.py`` (``Gambler``, ``energy_loss``, ``smooth``,
``sparsity``) and ``code/engine/trainer.py``. Its training loss per batch is::

    gambler(inlier images) + gambler(images with pasted outliers, wrong_sample=True)
      + 0.1 * [0.5 * (mean relu(E_in + 12)^2 + mean relu(-6 - E_out)^2)      # hazardseg.losses.energy.EnergyMargin
               + 5e-4 * ||E_out||_2 + 3e-6 * smooth(E)]                      # EnergySparsity, EnergySmoothness

with ``E = -logsumexp(l_1..K)`` over the K known-class logits, and the anomaly score ``E`` (then a 7x7,
sigma 1 Gaussian blur). The abstention ("gambler", Liu et al., "Deep Gamblers", NeurIPS 2019) term reads
a (K+1)-th *abstention* logit ``a`` (``model.heads.abstain``, a one-channel
:class:`~hazardseg.models.pixel_head.PixelHead`); with ``p = softmax([l, a])`` and the pixel-wise reward
``r = GaussianBlur_7,sigma1(logsumexp(l)^2)``::

    inlier of class y:  -log(p_y + p_a / r)
    outlier:            -0.1 * mean_c log(p_c + p_a / r)

Deviations, and why: the two gambler calls (clean images; inliers + outliers of pasted images) become
one mean over all inlier pixels plus one over outlier pixels (the same terms, without the split of the
batch by image). Log-probabilities are combined in log space (``logaddexp``) and ``r`` is clamped at
1e-6: the reference's ``p_a / r`` overflows for ``logsumexp(l)`` near 0. PEBAL fine-tunes only the
final classifier block of a Cityscapes-trained network; our recipe trains the whole network jointly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from hazardseg.errors import ConfigError
from hazardseg.losses.base import LossTerm, as_float, class_target, inliers, masked_mean, outliers
from hazardseg.losses.energy import free_energy


class AbstentionLoss(LossTerm):
    """PEBAL's energy-rewarded gambler loss on ``[logits, outputs[output]]`` (see the module docstring).

    Args:
        output: the abstention head (one channel).
        outlier_weight: factor of the outlier part (PEBAL's ``ood_reg`` = 0.1).
        reward_blur: Gaussian kernel size of the reward's smoothing (PEBAL: 7, sigma 1); 0 = none.
    """

    def __init__(self, weight: float = 1.0, output: str = "abstain", outlier_weight: float = 0.1,
                 reward_blur: int = 7, reward_sigma: float = 1.0):
        super().__init__(weight, output)
        if reward_blur and reward_blur % 2 == 0:
            raise ConfigError(f"reward_blur={reward_blur}: must be odd (or 0 for no blur)")
        self.outlier_weight, self.reward_blur, self.reward_sigma = float(outlier_weight), int(reward_blur), float(reward_sigma)

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        logits, abstain = as_float(outputs["logits"]), as_float(outputs[self.output])
        logp = F.log_softmax(torch.cat([logits, abstain], dim=1), dim=1)  # (N, K+1, H, W)
        log_reserve = logp[:, -1] - self.log_reward(logits)  # log(p_a / r)
        boosted = torch.logaddexp(logp[:, :-1], log_reserve.unsqueeze(1))  # log(p_c + p_a / r), (N, K, H, W)
        y = class_target(target).masked_fill(~inliers(target), 0).unsqueeze(1)
        loss_in = -masked_mean(boosted.gather(1, y)[:, 0], inliers(target))
        # PEBAL clamps p_c + p_a / r at 1e-7 before the log.
        loss_out = -masked_mean(boosted.clamp_min(math.log(1e-7)).mean(1), outliers(target))
        return loss_in + self.outlier_weight * loss_out

    def log_reward(self, logits: Tensor) -> Tensor:
        reward = torch.logsumexp(logits, dim=1).pow(2)  # (N, H, W); not detached, as in PEBAL
        if self.reward_blur:
            reward = TF.gaussian_blur(reward.unsqueeze(1), [self.reward_blur] * 2, [self.reward_sigma] * 2)[:, 0]
        return reward.clamp_min(1e-6).log()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, outlier_weight={self.outlier_weight}, reward_blur={self.reward_blur}"


class EnergySmoothness(LossTerm):
    """``sum over pixels of squared energy differences to the right and lower neighbour, / 2`` (PEBAL's
    ``smooth``; a sum, so ``weight`` is per pixel pair). Every pixel of the batch counts, as in PEBAL."""

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        energy = free_energy(as_float(outputs[self.output]))
        # PEBAL replicates the last row / column, whose differences are then 0: plain diffs are the same sum.
        dy = (energy[:, 1:, :] - energy[:, :-1, :]).pow(2).sum()
        dx = (energy[:, :, 1:] - energy[:, :, :-1]).pow(2).sum()
        return (dy + dx) / 2


class EnergySparsity(LossTerm):
    """``||E_out||_2``: the L2 norm of the energies of all outlier pixels of the batch (PEBAL's ``sparsity``:
    ``torch.norm`` of that vector; the paper calls it a sparsity term). Zero without outlier pixels."""

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        energy = free_energy(as_float(outputs[self.output]))
        out = outliers(batch["mask"])
        # sqrt has an infinite gradient at 0: add a tiny epsilon so an all-zero vector stays finite.
        return (energy.masked_fill(~out, 0.0).pow(2).sum() + 1e-12).sqrt() * out.any()

