"""The previous AnomalyMetrics (one dense 142 MiB histogram per metric), kept for benchmarks.

Verbatim code of ``hazardseg.metrics.anomaly`` before its state became two-level (blocks allocated on first use);
the module docstring is shortened (bin layout and metric definitions are the same as the current module's, and
the metric functions are imported from it). Not part of the package: ``bench_anomaly_metrics.py`` times this copy
beside the current ``AnomalyMetrics`` in the same process, so their ratio is measured on the same machine state.
"""

from __future__ import annotations

import math
import struct
import sys

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from hazardseg.metrics.names import ANOMALY
from hazardseg.metrics.anomaly import metrics_from_counts, _fpr95_cutoff  # noqa: F401  (same definitions)

MANTISSA_BITS = 16
EXP_MIN = -40  # magnitudes below 2**EXP_MIN share the centre bin
EXP_MAX = 23  # magnitudes at/above 2**EXP_MAX share the outermost bins
RECALL_LEVEL = 0.95

_SHIFT = 23 - MANTISSA_BITS  # float32 mantissa bits dropped
_LO_Q = (127 + EXP_MIN) << MANTISSA_BITS  # shifted magnitude key of 2**EXP_MIN
_HI_Q = (127 + EXP_MAX) << MANTISSA_BITS  # shifted magnitude key of 2**EXP_MAX
_HALF = _HI_Q - _LO_Q  # magnitude bins on each side of the centre bin
NUM_BINS = 2 * _HALF + 1
_INT32_MAX = 2**31 - 1
# The count histogram is kept LANES times; each update scatters its first 1/LANES of the pixels into lane 0,
# the next into lane 1, ... in one 2-D scatter_add_, which PyTorch runs on one CPU thread per lane (a 1-D
# scatter runs on one thread). The scatter is bound by cache misses in the 63 MiB histogram (wide-range maps
# like entropy touch ~0.5M bins per image): two lanes cut it from 8.3 to 4.2 ms per 921,600-pixel image on
# 2 cores, for 63 MiB more state. compute() sums the lanes. A constant, so states of all ranks match.
LANES = 2
_LOW_MASK = (1 << _SHIFT) - 1  # the mantissa bits below the bin resolution: they tell values in a bin apart


def _float_bits(x: float) -> int:
    """Signed int32 bit pattern of ``x`` rounded to float32."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def bin_of(x: float) -> int:
    """Global histogram bin of one score; monotone non-decreasing in ``x``."""
    mag_q = (_float_bits(x) & 0x7FFFFFFF) >> _SHIFT
    mb = min(max(mag_q, _LO_Q), _HI_Q) - _LO_Q
    return _HALF - mb if x < 0 else _HALF + mb


def bin_index(scores: Tensor, out: Tensor | None = None) -> Tensor:
    """int32 global bin of every score (contiguous float32); elementwise, equal to :func:`bin_of`.

    Sign-magnitude on the bit pattern: clamp the magnitude key ``m`` into the exponent window,
    then ``bin = _HALF + (m - _LO_Q)`` for positive and ``_HALF - (m - _LO_Q)`` for negative
    scores. Branch-free, so every score distribution (one-signed, mixed signs, infinities)
    costs the same seven integer passes. ``out``: an int32 tensor of the scores' size to write into
    (no allocation: fresh multi-MB buffers cost page faults on every batch).
    """
    bits = scores.view(torch.int32)
    idx = torch.bitwise_and(bits, 0x7FFFFFFF, out=out)  # magnitude bits; also maps -0.0 to +0.0
    idx >>= _SHIFT
    idx.clamp_(_LO_Q, _HI_Q)
    sign = bits >> 31  # 0 or -1 (arithmetic shift)
    # with s in {0, -1}: (m ^ s) - s = +-m, so _HALF +- (m - _LO_Q) = (m ^ s) + _HALF - _LO_Q - s (1 + 2 _LO_Q)
    idx ^= sign
    idx.add_(sign, alpha=-(1 + 2 * _LO_Q))
    idx += _HALF - _LO_Q
    return idx


def _low_bits(scores: Tensor) -> Tensor:
    """uint8 mantissa bits below the bin resolution; within a bin, equal low bits = equal scores."""
    if sys.byteorder == "little":  # the lowest byte of each float32, read in place: one pass
        return scores.view(torch.uint8)[::4] & _LOW_MASK
    return (scores.view(torch.int32) & _LOW_MASK).to(torch.uint8)


def _distinct(bins: Tensor, low: Tensor, size: int) -> Tensor:
    """bool per bin 0..size-1: do the given pixels (``bins``: int64) hold more than one value there?"""
    low_min = torch.full((size,), 255, dtype=torch.uint8, device=low.device).scatter_reduce_(0, bins, low, "amin")
    low_max = torch.zeros(size, dtype=torch.uint8, device=low.device).scatter_reduce_(0, bins, low, "amax")
    return low_min != low_max


def _flat_inputs(scores: Tensor, is_anomaly: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate shapes/dtypes; return 1-D contiguous float32 scores, bool labels, bool valid."""
    if scores.shape != is_anomaly.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and is_anomaly {tuple(is_anomaly.shape)} differ in shape")
    if valid is not None and valid.shape != scores.shape:
        raise ValueError(f"valid {tuple(valid.shape)} and scores {tuple(scores.shape)} differ in shape")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating point tensor, got {scores.dtype}")
    scores = scores.reshape(-1).to(torch.float32).contiguous()
    labels = is_anomaly.reshape(-1).to(torch.bool)
    return scores, labels, None if valid is None else valid.reshape(-1).to(torch.bool)


_NAN_MESSAGE = "scores contain NaN; anomaly scores must be numbers (+-inf are allowed)"


def _host_sync_is_free(device: torch.device) -> bool:
    """True on the CPU: reading a value back or sizing a tensor by its content costs no device sync."""
    return device.type == "cpu"


def histogram(
    scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None
) -> tuple[int | Tensor, Tensor, Tensor] | None:
    """Count the pixels of one image (or batch) per bin, only over the occupied bin range.

    Used per image by :class:`PerImageAnomalyMetrics`, where a full-size histogram per image
    would cost more than the image. Returns ``(where, counts, distinct)`` with ``counts`` of
    shape ``(2, k)`` (row 0 normal, row 1 anomaly) in ascending bin order and ``distinct`` (k,)
    bool, True where a bin's anomaly pixels hold more than one float32 value; or ``None`` for
    zero pixels.
    Dense case: ``where`` is the int ``gmin`` and the columns are bins ``gmin .. gmin+k-1``.
    Sparse case (span larger than the pixel count): ``where`` is a tensor of the ``k`` occupied
    global bins, found with ``torch.unique``. Reads the bin range back to the host (one sync),
    which the pooled :class:`AnomalyMetrics` avoids.
    """
    scores, labels, valid = _flat_inputs(scores, is_anomaly, valid)
    if valid is not None:
        scores, labels = scores[valid], labels[valid]
    if scores.numel() == 0:
        return None
    if bool(torch.isnan(scores).any()):
        raise ValueError(_NAN_MESSAGE)
    idx = bin_index(scores)
    gmin_t, gmax_t = torch.aminmax(idx)
    gmin, span = int(gmin_t), int(gmax_t) - int(gmin_t) + 1
    idx -= gmin
    if span > idx.numel():
        bins, inverse = torch.unique(idx, return_inverse=True)
        k = bins.numel()
        distinct = _distinct(inverse[labels], _low_bits(scores[labels]), k)
        counts = torch.bincount(inverse.add_(labels, alpha=k), minlength=2 * k).view(2, k)
        return bins.long() + gmin, counts, distinct
    distinct = _distinct(idx[labels].long(), _low_bits(scores[labels]), span)
    idx.add_(labels, alpha=span)
    counts = torch.bincount(idx, minlength=2 * span).view(2, span)
    return gmin, counts, distinct


def _compact(counts: Tensor, distinct: Tensor) -> tuple[Tensor, Tensor]:
    """Keep occupied bins only (counts as int64): empty bins add nothing to any metric."""
    keep = torch.nonzero(counts.any(0)).ravel()
    return counts[:, keep].long(), distinct[keep]


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
