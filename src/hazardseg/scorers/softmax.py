"""Stateless logit/softmax scorers. All return *higher = more anomalous*."""

from __future__ import annotations

import torch
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.scorers.base import Scorer


class MSP(Scorer):
    """Negated maximum softmax probability, ``-max_c softmax(l)_c`` (Hendrycks & Gimpel, ICLR 2017)."""

    name = "msp"

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        return -torch.softmax(logits, dim=1).amax(dim=1)


class MaxLogit(Scorer):
    """Negated maximum logit, ``-max_c l_c`` (Hendrycks et al., "Scaling OOD detection", ICML 2022)."""

    name = "maxlogit"

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        return -logits.amax(dim=1)


class Entropy(Scorer):
    """Softmax entropy ``-sum_c p_c log p_c``; uses log_softmax so tiny p do not underflow to log 0."""

    name = "entropy"

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        # p == 0 (e.g. a -inf logit) contributes 0, not 0 * -inf = nan.
        return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=1)


class Energy(Scorer):
    """Free energy ``E(x) = -T * logsumexp(l / T)`` (Liu et al., NeurIPS 2020).

    In-distribution pixels have *lower* energy, so E itself is the anomaly score.
    """

    name = "energy"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"scorer.energy.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        t = self.temperature
        return -t * torch.logsumexp(logits / t, dim=1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
