"""Stateless logit/softmax scorers. All return *higher = more anomalous*.

Resolution at the confident end. A well-trained segmenter gives normal pixels ``1 - max softmax``
of 1e-9..1e-4. In float32, ``-max softmax`` then collapses: every pixel with ``1 - p < 6e-8``
becomes exactly ``-1.0`` and the rest sit on a few hundred float32 values just above ``-1``, so
any float32 metric (ours, sklearn, torchmetrics, pytorch-ood) ties pixels that the paper's
definition orders. Scorers here therefore return a *monotone transform* of the paper's score
whenever the plain formula loses resolution, computed from the logits without cancellation:

=========  ===================================  ==============================================
scorer     returns                              same ranking (float64) as
=========  ===================================  ==============================================
msp        ``log(1 - max softmax)``             ``-max softmax`` (Hendrycks & Gimpel 2017)
maxlogit   ``-max logit``                       itself (exact in float32)
entropy    softmax entropy, cancellation-free   itself
energy     ``-T logsumexp(l / T)``              itself
=========  ===================================  ==============================================

AUROC, AUPR and FPR95 depend on the ranking only, so they equal the paper's numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.errors import ConfigError
from hazardseg.scorers.base import Scorer, class_max


class MSP(Scorer):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017), scored as ``log(1 - max softmax)``.

    The paper's score is ``-max_c p_c``; ``log(1 - p_max)`` is a strictly increasing function of
    it, so the ranking -- and with it AUROC/AUPR/FPR95 -- is the paper's, but it keeps its
    resolution where ``-p_max`` rounds to ``-1.0`` in float32 (``1 - p_max < 6e-8``, i.e. most
    pixels of a well-trained model). Values lie in ``[-inf, log(1 - 1/C)]``; ``-inf`` only when
    every other class has probability exactly 0 (``-inf`` logits).

    Computed from the logits without forming ``p``: with ``m`` the max logit and ``r`` the
    logsumexp of the other logits, ``1 - p_max = e^(r-m) / (1 + e^(r-m))``, so
    ``log(1 - p_max) = logsigmoid(r - m)``. Exactly one argmax is excluded from ``r``, so a tied
    maximum counts as another class (two tied classes: ``1 - p_max = 1/2``).
    """

    name = "msp"
    pixelwise = True

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        # its own max on each band, not the frame's shared class_max: the band is then still in the caches for the
        # rest, and MSP alone (the usual first scorer) pays no separate pass over the logits
        top, argmax = logits.max(dim=1, keepdim=True)
        others = logits.scatter(1, argmax, float("-inf")).logsumexp(dim=1)
        return F.logsigmoid(others - top.squeeze(1))


class MaxLogit(Scorer):
    """Negated maximum logit, ``-max_c l_c`` (Hendrycks et al., "Scaling OOD detection", ICML 2022).

    Exact in float32 (a max of float32 values), so the ranking is the paper's at any confidence.
    """

    name = "maxlogit"

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        return -class_max(logits)[0]  # the max logits other scorers of the frame take too


class Entropy(Scorer):
    """Softmax entropy ``H = -sum_c p_c log p_c`` (as in Chan, Rottmann & Gottschalk, ICCV 2021).

    Not computed as ``-sum p * log_softmax``: for a confident pixel ``log p_max`` rounds to 0 in
    float32 once ``1 - p_max < 6e-8``, dropping the ``~(1 - p_max)`` term of the max class and
    distorting the ranking by a few percent of ``H``. With ``m`` the max logit,
    ``d_j = m - l_j >= 0`` and ``S = sum_{j != argmax} e^(-d_j)``, the same quantity is
    ``H = log1p(S) + sum_{j != argmax} e^(-d_j) d_j / (1 + S)``: a sum of non-negative terms,
    accurate to float32 rounding for any confidence. ``-inf`` logits contribute 0.
    """

    name = "entropy"
    pixelwise = True

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        return self.score_with_max(logits, *logits.max(dim=1))

    def score_with_max(self, logits: Tensor, top: Tensor, argmax: Tensor) -> Tensor:
        shifted = logits - top.unsqueeze(1)  # -d_j, exactly
        weight = shifted.exp().scatter_(1, argmax.unsqueeze(1), 0.0)  # e^(l_j - m), the argmax itself excluded
        others = weight.sum(dim=1)
        # -e^(-d_j) d_j, summed: the products are nan only where a -inf logit (weight 0) meets its -inf shift, whose
        # true term is 0. Computed in place and negated at the end: the same bits as summing e^(-d_j) d_j with those
        # terms masked, in two passes instead of five (no sign cancels in a sum of terms of one sign).
        spread = torch.nan_to_num_(weight.mul_(shifted), nan=0.0, posinf=float("inf"), neginf=float("-inf")).sum(dim=1)
        return torch.log1p(others) - spread / (1 + others)


class Energy(Scorer):
    """Free energy ``E(x) = -T * logsumexp(l / T)`` (Liu et al., NeurIPS 2020).

    In-distribution pixels have *lower* energy, so E itself is the anomaly score. float32 keeps
    E to ~1e-7 relative (``logsumexp`` subtracts the max first): pixels of a confident model
    differ mostly in the max logit, which float32 resolves, so the ranking matches the float64
    one up to swaps of pixels whose energies differ by less than one float32 step.
    """

    name = "energy"
    pixelwise = True

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"scorer.energy.temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        t = self.temperature
        scaled = logits if t == 1.0 else logits / t  # x / 1 is x: no pass over the logits at the default
        return -t * torch.logsumexp(scaled, dim=1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
