"""Energy-regularised outlier exposure: squared hinges that pull inlier energy below ``m_in`` and push
outlier energy above ``m_out``.

Paper: Liu, Wang, Owens, Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020 (eq. 6).
Code: github.com/wetliu/energy_ood ``CIFAR/train.py``::

    Ec_in, Ec_out = -logsumexp(x_in, 1), -logsumexp(x_out, 1)
    loss += 0.1 * ((relu(Ec_in - m_in) ** 2).mean() + (relu(m_out - Ec_out) ** 2).mean())   # m_in -25, m_out -7

PEBAL (Tian et al., "Pixel-wise Energy-biased Abstention Learning for Anomaly Segmentation on Complex
Urban Driving Scenes", ECCV 2022; github.com/tianyu0207/PEBAL ``code/losses.py::energy_loss``) uses the
same hinge per pixel with ``m_in = -12``, ``m_out = -6`` and weight ``0.1 * 0.5``; its other terms are in
:mod:`hazardseg.losses.pebal`. Both score anomalies by the energy (``scorer=energy``).

Per pixel, as the segmentation adaptations do: each hinge is a mean over its own pixels (inliers:
known-class pixels; outliers: pasted pixels), so the outlier hinge does not shrink when the pasted
objects are small. A batch without outlier pixels contributes only the inlier hinge (as PEBAL's
``if Ec_out.size()[0] == 0`` branch). pytorch-ood's ``EnergyRegularizedLoss`` computes the segmentation
outlier hinge as ``relu(E(m_out - logits))^2`` (the margin inside the energy); we follow the paper and
both reference implementations above: ``relu(m_out - E(logits))^2``.

The margins are in the units of the network's energy, so they are per-dataset (and per-recipe)
hyperparameters: ``E_in`` of a trained model sits roughly at ``-max logit``.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.losses.base import LossTerm, as_float, inliers, masked_mean, outliers


def free_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``E = -T * logsumexp(l / T)`` over the class axis: (N, K, H, W) -> (N, H, W)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


class EnergyMargin(LossTerm):
    """``mean_in relu(E - m_in)^2 + mean_out relu(m_out - E)^2`` (unweighted; the paper's lambda is ``weight``).

    Args:
        m_in: inlier margin; inlier pixels with energy above it are penalised.
        m_out: outlier margin; outlier pixels with energy below it are penalised (``m_out > m_in``).
        temperature: T of the energy (1 in both references).
    """

    def __init__(self, weight: float = 0.1, output: str = "logits", m_in: float = -25.0, m_out: float = -7.0,
                 temperature: float = 1.0):
        super().__init__(weight, output)
        # bare `key=value: ...` messages: the config instantiation prefixes the term's own key (loss.terms.<name>.)
        for key, value in (("m_in", m_in), ("m_out", m_out), ("temperature", temperature)):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}={value}: must be a finite number")
        if not m_out > m_in:
            raise ConfigError(f"m_out={m_out}: must be larger than m_in={m_in} (outliers get the higher energy)")
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature}: must be > 0")
        self.m_in, self.m_out, self.temperature = float(m_in), float(m_out), float(temperature)

    @property
    def uses_outliers(self) -> bool:
        return True

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        energy = free_energy(as_float(outputs[self.output]), self.temperature)
        hinge_in = F.relu(energy - self.m_in).pow(2)
        hinge_out = F.relu(self.m_out - energy).pow(2)
        return masked_mean(hinge_in, inliers(target)) + masked_mean(hinge_out, outliers(target))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m_in={self.m_in}, m_out={self.m_out}, temperature={self.temperature}"
