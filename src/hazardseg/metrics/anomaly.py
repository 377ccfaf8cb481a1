"""Streaming pixel-level anomaly metrics (AUPR, AUROC, FPR95) with fixed-size state.

Why not torchmetrics' exact ``BinaryAUROC`` / ``BinaryAveragePrecision``: they store every
score (the StreetHazards test set has 1.38e9 pixels, ~11 GB of scores plus labels) and sort
them at the end. Their binned variants (``thresholds=T``) compare every pixel against every
threshold, which is O(pixels x T) and only as precise as the T linear thresholds you guess.

Here every score is mapped to a histogram bin through its float32 bit pattern, so the bins
follow the float format itself (relative, not absolute, resolution) and no score range has to
be known in advance. Two int32 count histograms (anomaly, normal) are the main state; they are
summed across processes (``dist_reduce_fx="sum"``), so DDP needs no extra code. Two uint8 arrays
keep, per bin, the smallest and largest of the float32 mantissa bits below the bin resolution
over the bin's *anomaly* pixels (``dist_reduce_fx="min"`` / ``"max"``): equal means its
anomalies share one value, a tie group. For AUROC and AUPR, pixels in the same bin are treated
as tied, exactly as sklearn treats equal scores; FPR95 uses the flags (see the error bounds).

Update path. ``update`` computes every pixel's global bin with a few elementwise integer ops
(:func:`bin_index`, the same ops for any sign pattern) and adds it straight into the state
(``scatter_add_`` for the counts, ``scatter_reduce_`` of the anomaly pixels for the flags);
ignored pixels are added with weight 0 rather than removed. The counts are kept in ``LANES = 2``
copies that one 2-D ``scatter_add_`` fills in parallel (half of each batch per lane; a scatter
into a histogram this size is bound by cache misses, not arithmetic). Nothing in it is
sized by the scores' range and nothing is read back to the host, so the cost per pixel barely
depends on the score distribution (MSP, max logit, entropy, energy, Gaussian maps all run at
115-300 Mpx/s on 2 CPU cores, see ``bench/``) and, on a GPU, ``update`` never synchronises.
(An earlier version histogrammed each batch over its occupied bin range and merged it into the
state: cheap for one-signed scores in a narrow range, 3-10x slower for wide or mixed-sign
ones, where the range grew to millions of bins or fell back to ``torch.unique``.)

Counts are int32 to afford twice the bins in the same memory: at most ``2**31 - 1`` pixels may
share one bin (the whole StreetHazards test set, 1.38e9 pixels, fits even with constant
scores). ``update`` raises before a bin overflows: it tracks on the host how many pixels it
was fed, and only once that passes ``2**31 - 1`` does it check the bins (a sync). ``compute``
cross-checks the bin total against an int64 pixel counter so an overflow in a DDP sum or a
``merge_state`` cannot go unnoticed either.

Bin layout (``MANTISSA_BITS = 16``, exponent window ``[2**-40, 2**23]``):

* the magnitude ``|x|`` keeps its 8 exponent bits and the top 16 of its 23 mantissa bits, so a
  bin spans a relative width of ``2**-16 ~= 1.5e-5`` of the value (e.g. bins just below 1.0
  are ``7.6e-6`` wide, i.e. 128 float32 values; near 0.001 about ``1.5e-8``);
* magnitudes below ``2**-40 ~= 9.1e-13`` (including +-0 and denormals) share one centre bin;
  magnitudes at or above ``2**23 ~= 8.4e6`` (including +-inf) share the two outermost bins.
  Scores outside this window lose their order among themselves -- rescale them if that matters;
* ``2 * 63 * 2**16 + 1 = 8,257,537`` bins per class: 63 MiB of int32 counts per lane (126 MiB
  for the two lanes) plus 2 x 7.9 MiB of uint8 flags, 142 MiB of state in total. In the centre
  and outermost bins the flags compare only the low mantissa bits, so distinct anomaly scores
  there may pass for a tie group.

Error bound. Only pixels sharing a bin can be ordered differently from the exact sort:

* AUROC: the error is at most half the fraction of (anomaly, normal) pairs that share a bin
  without being exactly equal, ``sum_b pos_b * neg_b / (2 P N)``;
* AUPR: only the precision values of anomaly pixels in bins that also hold normal pixels
  change, and each stays between the bin's extreme precisions, so the error is at most
  ``sum_b pos_b / P * (spread of precision inside bin b)``;
* FPR95: the reference picks the recall count nearest ``0.95 P`` and counts the normal pixels
  above the next anomaly. Which counts exist on the exact curve depends on the anomaly scores
  only: none inside a bin whose anomalies share one value, all inside a bin of distinct
  anomalies; the flags tell which, so the cutoff lands on the exact count. Only where the
  cutoff bin's normal pixels sit among its anomalies is unknown (taken as tied with a tie
  group, as randomly interleaved with distinct anomalies), so the error is below the fraction
  of normal pixels in that one bin (exact when the whole bin is one value; partial ties among
  a bin's anomalies are not resolved). Treating every bin as a tie group instead can move the
  cutoff past a whole gap between two anomalies: measured 5e-3 of FPR95 with 2e3 anomalies on
  2e5 pixels.

:meth:`AnomalyMetrics.error_bounds` evaluates the three bounds on the accumulated data.
The error is small when the scores spread over many bins, i.e. differ *relatively* by more
than ``2**-16``. For realistic score maps (Gaussian mixtures, max logit, entropy, energy, MSP
as ``log(1 - max softmax)``; 4e5-3e6 pixels in the tests, 2e7 in the benchmark; 1% down to
0.001% anomalies, including a simulated confident model whose normal pixels have
``1 - max softmax`` of 1e-9..1e-4) the measured error against the exact float64 computation
is below 1e-4 on all three metrics (see ``tests/test_anomaly_metrics.py``). Exactly equal
float32 scores always share a bin, so heavily tied data (e.g. scores rounded to 2 decimals)
agrees with sklearn up to float rounding. Inputs are compared at float32 precision: float64
scores are rounded to float32.

Scores concentrated in a relatively narrow range lose resolution, here and in every float32
tool: ``-max softmax`` of a confident model is exactly ``-1.0`` in float32 for every pixel with
``1 - p < 6e-8`` and falls into a handful of bins otherwise (measured on such a model: FPR95
off by 0.59, AUROC by 0.04). Feed a monotone, resolution-preserving transform instead -- the
ranking metrics are invariant to it; :class:`hazardseg.scorers.MSP` returns
``log(1 - max softmax)`` for this reason. ``error_bounds`` exposes the problem: its AUROC
bound becomes large.

Edge cases: NaN scores of valid pixels raise ``ValueError`` -- in ``update`` for CPU tensors,
in ``compute`` for GPU tensors (detecting them in ``update`` would cost a sync per batch); +-inf
are valid (outermost bins); an update with zero (valid) pixels is a no-op; scores on another
device than the state raise ``ValueError`` (move the metric, no silent host copies);
``compute`` raises ``ValueError`` if there is no data, no anomaly pixel or no normal pixel
(AUROC/FPR95 are undefined then; we refuse rather than return NaN so that a broken evaluation
cannot silently produce a table entry).

FPR95 follows Hendrycks' ``fpr_and_fdr_at_recall`` (anomaly-seg / StreetHazards): thresholds at
distinct scores, descending; keep the curve from the first point with full recall down to the
highest threshold; pick ``argmin |recall - 0.95|``, ties going to the higher recall; FPR95 is the
false positives there divided by the number of normal pixels.
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


def metrics_from_counts(neg: Tensor, pos: Tensor, distinct: Tensor | None = None) -> dict[str, float]:
    """AUPR/AUROC/FPR95 from per-bin counts in ascending score order (int64, 1-D).

    ``distinct`` (bool per bin) marks bins whose anomaly pixels hold more than one float32
    value; ``None`` means none do (every bin a tie group). Only FPR95 uses it.
    """
    pos, neg = pos.flip(0), neg.flip(0)  # descending score, as the curves are defined
    distinct = torch.zeros_like(pos, dtype=torch.bool) if distinct is None else distinct.flip(0)
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
    cutoff, in_bin = _fpr95_cutoff(pos, neg, tps, distinct, num_pos)
    fpr95 = (int(fps[cutoff] - neg[cutoff]) + in_bin) / num_neg
    return {"aupr": aupr, "auroc": auroc, "fpr95": fpr95}


def _fpr95_cutoff(pos: Tensor, neg: Tensor, tps: Tensor, distinct: Tensor, num_pos: int) -> tuple[int, float]:
    """Hendrycks' FPR95 operating point on binned counts in descending score order.

    The reference (``fpr_and_fdr_at_recall``) takes, among its curve points from full recall
    upwards, the first with minimal ``|recall - 0.95|``: the recall count ``t*`` nearest to
    ``0.95 P`` (ties: the higher), at the lowest threshold with that count, i.e. just above
    anomaly ``t* + 1`` (for ``t* = P``: at the last anomaly, normals tied with it included).
    Returns ``(c, in_bin)``: FPR95 counts the normals of the bins above bin ``c`` plus
    ``in_bin`` of bin ``c``'s normals, so the error is below ``neg[c]`` normals.

    Which counts are on the exact curve depends only on the anomaly scores: inside a bin whose
    anomalies share one value (a tie group) there are none, inside a bin whose anomalies are
    distinct there are all. Where a bin's normals sit between its anomalies is unknown: for a
    tie group they are taken as tied with it (exact when the whole bin is one value), for
    distinct anomalies ``in_bin`` is their expected number above the k-th of the ``pos``
    anomalies if interleaved at random, ``neg * k / (pos + 1)``. Treating a bin of distinct
    anomalies as a tie group instead can move the cutoff past a whole gap between two anomalies
    (measured: 5e-3 of FPR95 with 2e3 anomalies on 2e5 pixels).
    """
    last = int(torch.searchsorted(tps, torch.tensor([num_pos], device=tps.device))[0])
    ends = tps[: last + 1]  # recall counts at bin ends, on the curve whatever the bins hold
    dist = (ends.double() / float(num_pos) - RECALL_LEVEL).abs()
    best_dist = float(dist.min())
    best = int(ends[int(torch.nonzero(dist == best_dist).max())])  # ties: the higher count
    # counts strictly inside bins of distinct anomalies are on the curve too; only those next to
    # 0.95 P can beat the bin ends (float distances exactly as the reference computes them)
    near = math.floor(RECALL_LEVEL * num_pos)
    for t in range(max(near - 1, 1), min(near + 2, num_pos) + 1):
        b = int(torch.searchsorted(tps, torch.tensor([t], device=tps.device))[0])
        d = abs(t / num_pos - RECALL_LEVEL)
        if int(tps[b]) != t and bool(distinct[b]) and (d < best_dist or (d == best_dist and t > best)):
            best, best_dist = t, d
    if best == num_pos:  # at the last anomaly's score: its bin's normals count as tied or above
        c = last
        k, ties_count = int(pos[c]), True
    else:  # just above anomaly best + 1
        c = int(torch.searchsorted(tps, torch.tensor([best + 1], device=tps.device))[0])
        k, ties_count = best + 1 - int(tps[c] - pos[c]), False
    n_c = int(neg[c])
    if not bool(distinct[c]):
        return c, float(n_c if ties_count else 0)
    return c, n_c * k / (int(pos[c]) + 1)


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
    higher_is_better = None  # several values: see ``directions``
    directions = ANOMALY  # name -> higher is better, for every value compute() returns
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
            counts, distinct = _compact(result[1], result[2])
            if not bool((counts.sum(1) > 0).all()):
                continue  # no anomaly or no normal pixel in this image
            values = metrics_from_counts(counts[0], counts[1], distinct)
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
