"""A score threshold users can trust without anomaly labels: the one that flags a chosen share (false-positive
rate, e.g. 5%) of *known-class* pixels of the validation split.

:class:`ThresholdAtFPR` streams the known pixels' scores into the fine histogram bins of
:mod:`hazardseg.metrics.anomaly` (:func:`~hazardseg.metrics.anomaly.bin_index`, monotone in the score), keeping
per occupied bin its count and the *smallest score* seen in it. The threshold is that smallest score of the
lowest bin whose pixels and all above it make at most ``fpr`` of the known pixels, so a pixel is flagged when
``score >= threshold`` and the flagged share of the validation pixels is exactly ``achieved_fpr`` (<= ``fpr``,
lower by at most one bin's share; ties cannot be split). State: the occupied bins only (sorted, compacted every
update), concatenated across DDP ranks and merged at ``compute``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from hazardseg.metrics.anomaly import bin_index


class ThresholdAtFPR(Metric):
    full_state_update = False
    higher_is_better = None

    def __init__(self, fpr: float = 0.05, **kwargs) -> None:
        super().__init__(**kwargs)
        if not (isinstance(fpr, (int, float)) and 0 < fpr < 1):
            raise ValueError(f"fpr={fpr!r}: expected a share in (0, 1)")
        self.fpr = float(fpr)
        self.add_state("bins", default=[], dist_reduce_fx="cat")
        self.add_state("counts", default=[], dist_reduce_fx="cat")
        self.add_state("mins", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor) -> None:
        """``scores``: the scores of known-class pixels (any shape); NaN is refused, +-inf kept."""
        flat = scores.detach().reshape(-1).float().contiguous()
        if flat.numel() == 0:
            return
        if torch.isnan(flat).any():
            raise ValueError("NaN scores among the known-class pixels: the scorer is broken on these images")
        bins, counts, mins = _compact(bin_index(flat).long(), torch.ones_like(flat, dtype=torch.long), flat)
        if self.bins:  # keep one sorted, merged list: memory = occupied bins, not pixels
            bins, counts, mins = _compact(torch.cat([self.bins[0], bins]), torch.cat([self.counts[0], counts]),
                                          torch.cat([self.mins[0], mins]))
        self.bins, self.counts, self.mins = [bins], [counts], [mins]

    def compute(self) -> dict[str, float]:
        if not self.bins:
            raise ValueError("ThresholdAtFPR.compute() before any known-class pixel was added")
        cat = (lambda x: torch.cat(x) if isinstance(x, list) else x)
        bins, counts, mins = _compact(cat(self.bins), cat(self.counts), cat(self.mins))  # ranks' lists, merged
        total = int(counts.sum())
        above = counts.flip(0).cumsum(0).flip(0)  # pixels in this bin and every higher one
        allowed = math.floor(self.fpr * total + 1e-9)
        eligible = torch.nonzero(above <= allowed).ravel()
        if eligible.numel() == 0:  # even the highest bin holds more than fpr of the pixels: flag nothing
            return {"threshold": float("inf"), "achieved_fpr": 0.0, "pixels": total, "fpr": self.fpr}
        first = int(eligible[0])
        return {"threshold": float(mins[first]), "achieved_fpr": int(above[first]) / total, "pixels": total, "fpr": self.fpr}


def _compact(bins: Tensor, counts: Tensor, mins: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted unique bins, their summed counts and smallest scores."""
    unique, inverse = torch.unique(bins, sorted=True, return_inverse=True)
    summed = torch.zeros(unique.numel(), dtype=torch.long, device=bins.device).index_add_(0, inverse, counts)
    lowest = torch.full((unique.numel(),), float("inf"), device=bins.device).scatter_reduce_(0, inverse, mins, "amin")
    return unique, summed, lowest
