"""Probability of the void / background class of a (K+1)-way classifier (``loss=void``).

Blum et al., "The Fishyscapes Benchmark", IJCV 2021 (void classifier baseline); pytorch-ood
``BackgroundClassLoss``. The (K+1)-th logit ``v`` is the ``void`` head of the network
(:mod:`hazardseg.losses.void`); the score is ``log p_void`` over ``softmax([logits, v])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.scorers.base import Scorer


class VoidProbability(Scorer):
    """``log p_void = v - logsumexp([l_1..l_K, v]) = logsigmoid(v - logsumexp(l))``.

    In log space: float32 ``p_void`` itself rounds to exactly 1.0 for every pixel with ``v`` a few
    units above the known logits (and to 0 far below), which would tie the most (and least) anomalous
    pixels; ``logsigmoid`` keeps them ordered. Monotone in ``p_void``, so AUROC/AUPR/FPR95 equal those of
    the probability itself.
    """

    name = "void"

    def __init__(self, output: str = "void") -> None:
        super().__init__()
        self.output = output

    @property
    def required_outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        logits, void = outputs["logits"].float(), outputs[self.output].float()
        return F.logsigmoid(void[:, 0] - torch.logsumexp(logits, dim=1))

    def extra_repr(self) -> str:
        return f"output={self.output!r}"
