"""The previous AnomalyMetrics (one dense 142 MiB histogram per metric), kept for benchmarks.

Verbatim ``AnomalyMetrics`` class of ``hazardseg.metrics.anomaly`` before its state became two-level (blocks
allocated on first use); the module-level helpers it uses (bins, index arithmetic, metric definitions) did not
change and are imported from the current module. Not part of the package: ``bench_anomaly_metrics.py`` times this copy
beside the current ``AnomalyMetrics`` in the same process, so their ratio is measured on the same machine state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

# unchanged since: the bins, the update's index arithmetic and the metric definitions
from hazardseg.metrics.anomaly import (  # noqa: F401
    _INT32_MAX, _NAN_MESSAGE, LANES, NUM_BINS, _flat_inputs, _fpr95_cutoff, _host_sync_is_free, _low_bits, bin_index,
    metrics_from_counts,
)
from hazardseg.metrics.names import ANOMALY


class AnomalyMetrics(Metric):
    """Pooled pixel-level AUPR / AUROC / FPR95 (anomaly = positive, higher score = more anomalous).

    ``update(scores, is_anomaly, valid=None)`` accepts tensors of any (equal) shape; pixels with
    ``valid == False`` are dropped (they may hold anything, even NaN). The state is a fixed
    ``(LANES, 2, NUM_BINS)`` int32 histogram (``counts.sum(0)``: the per-bin normal / anomaly
    counts) plus per-bin tie flags (142 MiB) no matter how many pixels are fed. It lives on the
    metric's device, which must be the scores' device (``metric.to(device)``; Lightning moves
    metrics that are attributes of the module).
    ``update`` adds every pixel straight into it with ``scatter_add_`` / ``scatter_reduce_``: no
    host copy and, on a GPU, no host-device sync. See the module docstring for the bin
    resolution and error bounds.
    """

    is_differentiable = False
    higher_is_better = None  # several values: see ``directions``
    directions = ANOMALY  # name -> higher is better, for every value compute() returns
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # (LANES, 2, NUM_BINS): per lane, row 0 counts normal and row 1 anomaly pixels per bin.
        self.add_state("counts", default=torch.zeros(LANES, 2, NUM_BINS, dtype=torch.int32), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("nan_pixels", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        # Per bin, the smallest and largest low mantissa bits of its *anomaly* pixels: tells tie
        # groups from bins of distinct anomaly scores, for FPR95. 2 x 7.9 MiB.
        self.add_state("low_min", default=torch.full((NUM_BINS,), 255, dtype=torch.uint8), dist_reduce_fx="min")
        self.add_state("low_max", default=torch.zeros(NUM_BINS, dtype=torch.uint8), dist_reduce_fx="max")
        self._pixels_fed = 0  # host-side upper bound on any bin of this process (see _check_room)
        self._scratch: tuple[Tensor, Tensor] | None = None  # scratch of _flat_index, not state

    def reset(self) -> None:
        super().reset()
        self._pixels_fed = 0

    def update(self, scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None) -> None:
        if scores.device != self.counts.device:
            raise ValueError(
                f"AnomalyMetrics: scores are on {scores.device} but the metric state is on {self.counts.device}; "
                "move the metric to the scores' device with metric.to(scores.device)"
            )
        scores, labels, valid = _flat_inputs(scores, is_anomaly, valid)
        n = scores.numel()
        if n == 0:
            return
        self._check_nan(scores, valid)
        index = self._flat_index(scores, labels)
        # Ignored pixels are not removed (boolean indexing syncs on a GPU) but added with weight 0.
        weight = torch.ones(1, dtype=torch.int32, device=scores.device).expand(n)
        if valid is not None:
            weight = valid.to(torch.int32)
        self._pixels_fed += n
        if self._pixels_fed > _INT32_MAX:
            self._check_room(index, weight)
        lanes = self.counts.view(LANES, -1)
        split = n - n % LANES  # the first split pixels go to the lanes in equal parts, a remainder to lane 0
        lanes.scatter_add_(1, index[:split].view(LANES, -1), weight[:split].view(LANES, -1))
        if split < n:
            lanes[0].scatter_add_(0, index[split:], weight[split:])
        self.pixels.add_(n if valid is None else weight.sum())
        self._update_tie_flags(scores, index, labels if valid is None else labels & valid)

    def _flat_index(self, scores: Tensor, labels: Tensor) -> Tensor:
        """int64 bin of every pixel in a flat ``(2, NUM_BINS)`` lane (row 1 = anomaly pixels), computed in
        buffers kept between updates of equal size (images of one size: allocated once)."""
        n = scores.numel()
        if self._scratch is None or self._scratch[0].numel() != n or self._scratch[0].device != scores.device:
            self._scratch = (torch.empty(n, dtype=torch.int32, device=scores.device),
                             torch.empty(n, dtype=torch.int64, device=scores.device))
        small, index = self._scratch
        bin_index(scores, out=small).add_(labels, alpha=NUM_BINS)
        return index.copy_(small)  # scatter ops take int64 indices

    def _check_nan(self, scores: Tensor, valid: Tensor | None) -> None:
        """NaN in valid pixels: raise now on the host (free there); count on a GPU for compute()."""
        on_host = _host_sync_is_free(scores.device)
        if on_host and valid is None:
            if bool(scores.max().isnan()):  # max propagates NaN: one read-only pass
                raise ValueError(_NAN_MESSAGE)
            return
        nan = torch.isnan(scores)
        if valid is not None:
            nan &= valid
        if on_host:
            if bool(nan.any()):
                raise ValueError(_NAN_MESSAGE)
        else:
            self.nan_pixels += nan.sum()

    def _update_tie_flags(self, scores: Tensor, index: Tensor, anomaly: Tensor) -> None:
        """Fold the anomaly pixels' low mantissa bits into the per-bin min/max flags."""
        if _host_sync_is_free(scores.device):  # anomalies are few: gather them first
            where = torch.nonzero(anomaly.view(torch.uint8)).squeeze(1)  # the uint8 view scans faster
            bins, low_min = index[where] - NUM_BINS, _low_bits(scores[where])
            low_max = low_min
        else:  # gathering would sync; other pixels get neutral values instead
            bins = torch.where(anomaly, index - NUM_BINS, 0)
            low = _low_bits(scores)
            low_min, low_max = low.masked_fill(~anomaly, 255), low.masked_fill(~anomaly, 0)
        self.low_min.scatter_reduce_(0, bins, low_min, "amin")
        self.low_max.scatter_reduce_(0, bins, low_max, "amax")

    def _check_room(self, flat: Tensor, weight: Tensor) -> None:
        """Raise before a bin passes ``2**31 - 1`` pixels (over all lanes); runs (and syncs) only once that
        many pixels were fed.

        A bin can only overflow if the bound on its count (pixels fed so far) exceeds int32, so the
        usual path skips this. Only bins within ``numel`` of the limit are counted exactly.
        """
        lanes = self.counts.view(LANES, -1)
        near_full = lanes[:, flat].sum(0, dtype=torch.int64) + flat.numel() > _INT32_MAX
        if not bool(near_full.any()):
            return
        bins, adds = torch.unique(flat[near_full & (weight > 0)], return_counts=True)
        if bool((lanes[:, bins].sum(0, dtype=torch.int64) + adds > _INT32_MAX).any()):
            raise ValueError(f"more than {_INT32_MAX} pixels in one score bin; int32 counts would overflow")

    def _occupied(self) -> tuple[Tensor, Tensor]:
        """Occupied bins: int64 counts ``(2, k)`` and ``distinct`` flags ``(k,)``, after the sanity checks."""
        if int(self.nan_pixels):
            raise ValueError(f"{int(self.nan_pixels)} valid pixels had NaN scores; " + _NAN_MESSAGE)
        rows = self.counts.view(-1, NUM_BINS)  # every lane's normal and anomaly rows
        occupied = rows[0] | rows[1]
        for row in rows[2:]:
            occupied |= row  # nonzero exactly where some row is (no int64 copy of the 126 MiB state)
        keep = torch.nonzero(occupied).ravel()
        lanes = self.counts[:, :, keep]  # a wrapped (negative) bin is nonzero, so it is in here
        counts = lanes.long().sum(0)  # lanes summed in int64, occupied bins only
        distinct = (self.low_min != self.low_max)[keep]
        if counts.shape[1] == 0:
            raise ValueError("AnomalyMetrics.compute() called before any pixel was added via update()")
        if bool((lanes < 0).any()) or int(counts.sum()) != int(self.pixels):
            raise ValueError("score histogram overflowed (over 2**31-1 pixels in one bin after the DDP sum)")
        return counts, distinct

    def compute(self) -> dict[str, float]:
        counts, distinct = self._occupied()
        return metrics_from_counts(counts[0], counts[1], distinct)

    def error_bounds(self) -> dict[str, float]:
        """Upper bounds on |metric - exact| caused by binning (see module doc), per metric.

        Pixels with exactly equal scores also share a bin, so the bounds are conservative for
        tied data (there the error is zero). The FPR95 bound is the fraction of normal pixels in
        the bin at the cutoff.
        """
        counts, distinct = self._occupied()
        neg, pos = counts[0].flip(0), counts[1].flip(0)
        cutoff, _ = _fpr95_cutoff(pos, neg, pos.cumsum(0), distinct.flip(0), int(pos.sum()))
        fpr95 = int(neg[cutoff]) / int(neg.sum())
        tps, fps = pos.cumsum(0).double(), neg.cumsum(0).double()
        num_pos, num_neg = tps[-1].item(), fps[-1].item()
        posd, negd = pos.double(), neg.double()
        auroc = (posd * negd).sum().item() / (2 * num_pos * num_neg)
        # exact precision of an anomaly pixel in bin b lies between the bin's extremes
        tp_above, fp_above = tps - posd, fps - negd
        p_lo = (tp_above + 1) / (tp_above + 1 + fps).clamp(min=1)
        p_hi = tps / (tps + fp_above).clamp(min=1)
        p_bin = tps / (tps + fps).clamp(min=1)
        spread = torch.maximum(p_hi - p_bin, p_bin - p_lo) * (negd > 0)
        aupr = (posd * spread).sum().item() / num_pos
        return {"aupr": aupr, "auroc": auroc, "fpr95": fpr95}

    def curves(self, max_points: int = 1000) -> dict[str, np.ndarray]:
        """PR and ROC curve points at the occupied bins (descending threshold), for plotting.

        Downsampled to at most ``max_points`` evenly spaced points (first and last kept).
        Returns float64 numpy arrays ``precision``, ``recall`` (PR curve) and ``fpr``, ``tpr``
        (ROC), all of equal length; prepend (0, 0) to the ROC points if the plot needs it.
        """
        counts, _ = self._occupied()
        neg, pos = counts[0].flip(0), counts[1].flip(0)
        keep = (pos + neg) > 0
        tps, fps = pos.cumsum(0)[keep].double(), neg.cumsum(0)[keep].double()
        num_pos, num_neg = tps[-1], fps[-1]
        n = tps.numel()
        if n > max_points:
            sel = torch.linspace(0, n - 1, max_points, device=tps.device).round().long().unique()
            tps, fps = tps[sel], fps[sel]
        out = {
            "precision": tps / (tps + fps),
            "recall": tps / num_pos,  # NaN if a class is missing: plotting should not raise
            "fpr": fps / num_neg,
            "tpr": tps / num_pos,
        }
        return {k: v.cpu().numpy() for k, v in out.items()}
