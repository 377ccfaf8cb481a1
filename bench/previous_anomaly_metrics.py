"""The previous AnomalyMetrics (span-limited per-batch histogram merged into the state), kept for benchmarks.

Verbatim code of ``hazardseg.metrics.anomaly`` before ``update`` switched to one ``scatter_add_``
straight into the state; the module docstring is shortened (bin layout and metric definitions are
the same as the current module's). Not part of the package: ``bench_anomaly_metrics.py`` times this
copy and the current ``AnomalyMetrics`` in the same process, so their ratio is measured on the same
machine state.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

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
_NEG_Q = -(1 << (31 - _SHIFT))  # (int32 bits of a negative float) >> _SHIFT = _NEG_Q + |x| key


def _float_bits(x: float) -> int:
    """Signed int32 bit pattern of ``x`` rounded to float32."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def bin_of(x: float) -> int:
    """Global histogram bin of one score; monotone non-decreasing in ``x``."""
    mag_q = (_float_bits(x) & 0x7FFFFFFF) >> _SHIFT
    mb = min(max(mag_q, _LO_Q), _HI_Q) - _LO_Q
    return _HALF - mb if x < 0 else _HALF + mb


def _local_bins(bits: Tensor, lo: float, hi: float, gmin: int, gmax: int) -> Tensor:
    """int32 bin index minus ``gmin`` for every pixel (``bits``: float32 bit patterns).

    Fast paths for one-signed data (MSP, entropy, energy are one-signed) need 2-3 full passes;
    mixed signs need the generic sign handling. Bins are global, so the result does not depend
    on which path ran.
    """
    span = gmax - gmin + 1
    if lo > 0:
        # all positive: bin - gmin == (bits >> S) - lo_q (shift is monotone, no overflow);
        # out-of-window values land outside [0, span) and are clamped to the edge bins.
        lo_q = max(_float_bits(lo) >> _SHIFT, _LO_Q)
        idx = torch.sub(bits, lo_q << _SHIFT)
        idx >>= _SHIFT
        if not (2.0**EXP_MIN <= lo and hi < 2.0**EXP_MAX):
            idx.clamp_(0, span - 1)
        return idx
    if hi < 0:
        # all negative: bin - gmin == j - (bits >> S); (c - bits) >> S with c = j*2^S + 2^S-1
        # equals that exactly (floor division), in one allocation.
        j = _HALF + _LO_Q + _NEG_Q - gmin
        idx = torch.sub((j << _SHIFT) + (1 << _SHIFT) - 1, bits)
        idx >>= _SHIFT
        if not (2.0**EXP_MIN <= -hi and -lo < 2.0**EXP_MAX):
            idx.clamp_(0, span - 1)
        return idx
    # mixed signs or zeros: clamp the magnitude key, then apply the sign.
    idx = bits & 0x7FFFFFFF  # also maps -0.0 to +0.0
    idx >>= _SHIFT
    idx.clamp_(_LO_Q, _HI_Q).sub_(_LO_Q)
    sign = bits >> 31  # 0 or -1
    idx ^= sign
    idx -= sign  # conditional negation: -mb where the score is negative
    idx += _HALF - gmin
    return idx


def histogram(
    scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None
) -> tuple[int | Tensor, Tensor] | None:
    """Count pixels per bin, only over the occupied bin range.

    Returns ``(where, counts)`` with ``counts`` of shape ``(2, k)`` (row 0 normal, row 1
    anomaly) in ascending bin order, or ``None`` for zero pixels. Dense case (the usual one):
    ``where`` is the int ``gmin`` and the columns are bins ``gmin .. gmin+k-1``. One
    ``bincount`` handles both classes (label folded into the index), and its size is the
    occupied span, never the full ``NUM_BINS`` -- allocating 63 MiB per batch would dominate.
    Sparse case (span larger than the pixel count, e.g. a small batch with mixed signs):
    ``where`` is a tensor of the ``k`` occupied global bins, found with ``torch.unique``.
    """
    if scores.shape != is_anomaly.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and is_anomaly {tuple(is_anomaly.shape)} differ in shape")
    if valid is not None:
        if valid.shape != scores.shape:
            raise ValueError(f"valid {tuple(valid.shape)} and scores {tuple(scores.shape)} differ in shape")
        valid = valid.to(torch.bool)
        scores, is_anomaly = scores[valid], is_anomaly[valid]
    if scores.numel() == 0:
        return None
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating point tensor, got {scores.dtype}")
    scores = scores.reshape(-1).to(torch.float32).contiguous()
    lo_t, hi_t = torch.aminmax(scores)  # one pass gives the span and detects NaN
    lo, hi = lo_t.item(), hi_t.item()
    if lo != lo or hi != hi:
        raise ValueError("scores contain NaN; anomaly scores must be numbers (+-inf are allowed)")
    gmin, gmax = bin_of(lo), bin_of(hi)
    span = gmax - gmin + 1
    idx = _local_bins(scores.view(torch.int32), lo, hi, gmin, gmax)
    labels = is_anomaly.reshape(-1).to(torch.bool)
    if span > idx.numel():
        bins, inverse = torch.unique(idx, return_inverse=True)
        k = bins.numel()
        counts = torch.bincount(inverse.add_(labels, alpha=k), minlength=2 * k).view(2, k)
        return bins.long() + gmin, counts
    idx.add_(labels, alpha=span)
    counts = torch.bincount(idx, minlength=2 * span).view(2, span)
    return gmin, counts


def _compact(counts: Tensor) -> Tensor:
    """Keep occupied bins only, as int64: empty bins add nothing to any metric."""
    return counts[:, torch.nonzero(counts.any(0)).ravel()].long()


def metrics_from_counts(neg: Tensor, pos: Tensor) -> dict[str, float]:
    """AUPR/AUROC/FPR95 from per-bin counts in ascending score order (int64, 1-D)."""
    pos, neg = pos.flip(0), neg.flip(0)  # descending score, as the curves are defined
    tps, fps = pos.cumsum(0), neg.cumsum(0)
    num_pos, num_neg = int(tps[-1]), int(fps[-1])
    if num_pos == 0 or num_neg == 0:
        what = "anomaly" if num_pos == 0 else "normal"
        raise ValueError(f"no {what} pixels were seen; AUROC/AUPR/FPR95 need both classes")
    posd, negd = pos.double(), neg.double()
    # AUROC = P(anomaly scores higher) + 0.5 P(tie): per bin, negatives times positives above
    # plus half the positives inside the bin. Same value as sklearn's trapezoid.
    auroc = (negd * ((tps - pos).double() + 0.5 * posd)).sum().item() / (num_pos * num_neg)
    # AP = sum over thresholds of (recall step) * precision, no interpolation (sklearn).
    precision = tps.double() / (tps + fps).clamp(min=1).double()
    aupr = (posd * precision).sum().item() / num_pos
    return {"aupr": aupr, "auroc": auroc, "fpr95": _fpr_at_recall(tps, fps, num_pos, num_neg)}


def _fpr_at_recall(tps: Tensor, fps: Tensor, num_pos: int, num_neg: int) -> float:
    """Hendrycks' FPR at 95% recall on (possibly duplicated) curve points, descending score.

    Duplicate points (empty bins) do not matter: a tie in ``|recall - 0.95|`` between equal
    points yields the same fps. The appended end point of the reference can never be chosen
    (the point at ``last_ind`` has recall exactly 1 and comes first), so it is omitted.
    """
    last = int(torch.searchsorted(tps, torch.tensor([num_pos], device=tps.device))[0])
    dist = (tps[: last + 1].double() / float(num_pos) - RECALL_LEVEL).abs()
    # the reference scans from full recall upwards, so its first minimum is our LAST one
    cutoff = int(torch.nonzero(dist == dist.min()).max())
    return int(fps[cutoff]) / num_neg


class AnomalyMetrics(Metric):
    """Pooled pixel-level AUPR / AUROC / FPR95 (anomaly = positive, higher score = more anomalous).

    ``update(scores, is_anomaly, valid=None)`` accepts tensors of any (equal) shape on any
    device; pixels with ``valid == False`` are dropped. State is a fixed ``(2, NUM_BINS)``
    int32 histogram (63 MiB) no matter how many pixels are fed. See the module docstring for
    the bin resolution and error bounds.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("counts", default=torch.zeros(2, NUM_BINS, dtype=torch.int32), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None) -> None:
        result = histogram(scores, is_anomaly, valid)
        if result is None:
            return
        where, counts = result
        counts = counts.to(self.counts.device)
        if isinstance(where, int):
            window = self.counts[:, where : where + counts.shape[1]]
            merged = window + counts  # int64
        else:
            window = self.counts[:, where.to(self.counts.device)]  # a copy (advanced indexing)
            merged = window + counts
        if int(merged.max()) > _INT32_MAX:
            raise ValueError(f"more than {_INT32_MAX} pixels in one score bin; int32 counts would overflow")
        if isinstance(where, int):
            window.copy_(merged)
        else:
            self.counts[:, where.to(self.counts.device)] = merged.to(torch.int32)
        self.pixels += int(counts.sum())

    def _occupied(self) -> Tensor:
        counts = _compact(self.counts)
        if counts.shape[1] == 0:
            raise ValueError("AnomalyMetrics.compute() called before any pixel was added via update()")
        if int(counts.sum()) != int(self.pixels):
            raise ValueError("score histogram overflowed (over 2**31-1 pixels in one bin after the DDP sum)")
        return counts

    def compute(self) -> dict[str, float]:
        counts = self._occupied()
        return metrics_from_counts(counts[0], counts[1])

    def error_bounds(self) -> dict[str, float]:
        """Upper bounds on |AUROC - exact| and |AUPR - exact| caused by binning (see module doc).

        Pixels with exactly equal scores also share a bin, so these bounds are conservative
        for tied data (there the error is zero).
        """
        counts = self._occupied()
        neg, pos = counts[0].flip(0), counts[1].flip(0)
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
        return {"aupr": aupr, "auroc": auroc}

    def curves(self, max_points: int = 1000) -> dict[str, np.ndarray]:
        """PR and ROC curve points at the occupied bins (descending threshold), for plotting.

        Downsampled to at most ``max_points`` evenly spaced points (first and last kept).
        Returns float64 numpy arrays ``precision``, ``recall`` (PR curve) and ``fpr``, ``tpr``
        (ROC), all of equal length; prepend (0, 0) to the ROC points if the plot needs it.
        """
        counts = self._occupied()
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


class PerImageAnomalyMetrics(Metric):
    """StreetHazards protocol: AUPR/AUROC/FPR95 per image, averaged over images.

    ``update(scores, is_anomaly, valid=None)`` takes a batch ``(N, H, W)`` (any ``(N, ...)``)
    and scores each image on its own with the same binned computation as
    :class:`AnomalyMetrics` (same definitions and error bounds, per image). Images without an
    anomaly pixel are skipped (as in the original protocol), and so are images without a
    normal pixel (AUROC/FPR95 undefined). State: three float64 sums and an image count.
    ``compute`` returns the means and ``num_images``; it raises ``ValueError`` when no image
    qualified.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("aupr_sum", "auroc_sum", "fpr95_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None) -> None:
        if scores.shape != is_anomaly.shape or scores.ndim < 2:
            raise ValueError(
                f"expected scores and is_anomaly of equal shape (N, H, W), got {tuple(scores.shape)} "
                f"and {tuple(is_anomaly.shape)}"
            )
        for i in range(scores.shape[0]):
            result = histogram(scores[i], is_anomaly[i], None if valid is None else valid[i])
            if result is None:
                continue
            counts = _compact(result[1])
            if not bool((counts.sum(1) > 0).all()):
                continue  # no anomaly or no normal pixel in this image
            values = metrics_from_counts(counts[0], counts[1])
            self.aupr_sum += values["aupr"]
            self.auroc_sum += values["auroc"]
            self.fpr95_sum += values["fpr95"]
            self.num_images += 1

    def compute(self) -> dict[str, float]:
        count = int(self.num_images)
        if count == 0:
            raise ValueError(
                "PerImageAnomalyMetrics: no image with both anomaly and normal pixels was seen"
            )
        return {
            "aupr": float(self.aupr_sum) / count,
            "auroc": float(self.auroc_sum) / count,
            "fpr95": float(self.fpr95_sum) / count,
            "num_images": count,
        }
