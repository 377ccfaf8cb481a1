"""Streaming pixel-level anomaly metrics (AUPR, AUROC, FPR95) with bounded state.

Why not torchmetrics' exact ``BinaryAUROC`` / ``BinaryAveragePrecision``: they store every
score (the StreetHazards test set has 1.38e9 pixels, ~11 GB of scores plus labels) and sort
them at the end. Their binned variants (``thresholds=T``) compare every pixel against every
threshold, which is O(pixels x T) and only as precise as the T linear thresholds you guess.

Here every score is mapped to a histogram bin through its float32 bit pattern, so the bins
follow the float format itself (relative, not absolute, resolution) and no score range has to
be known in advance. Two int32 count histograms (anomaly, normal) are the main state, summed
across processes (``dist_reduce_fx="sum"``). Two uint8 arrays keep, per bin, the smallest and
largest of the float32 mantissa bits below the bin resolution over the bin's *anomaly* pixels
(``dist_reduce_fx="min"`` / ``"max"``): equal means its anomalies share one value, a tie group.
For AUROC and AUPR, pixels in the same bin are treated as tied, exactly as sklearn treats equal
scores; FPR95 uses the flags (see the error bounds).

Two-level state. The histograms have 8.3M bins per class, but a score map occupies a small
part of them, so they are stored in blocks of 256 bins allocated on the first pixel that falls
into each (see :class:`AnomalyMetrics`): constructing a metric costs nothing, its memory grows
with the blocks the scores reach (measured: 2.5-31 MiB for 1e6-1e7 pixels of MSP, entropy,
energy and Gaussian maps; past ``DENSE_AFTER_PIXELS`` it switches to all blocks, 165 MiB;
``bench/``), and ``compute`` reads the allocated blocks only,
keeping each bin that holds anomaly pixels and summing the normal pixels between two of them
(all three metrics and their error bounds read nothing else). Under DDP the ranks first agree
on the union of their blocks, then sum states of equal shape (``AnomalyMetrics._sync_dist``).
Before this layout every metric allocated and zeroed the whole 142 MiB histogram, and every
``compute`` scanned all of it: 0.07 s + 0.1 s of fixed cost per metric on 2 CPU cores.

Small evaluations. On the CPU a metric first keeps its pixels as they are (scores and labels, 5 bytes a pixel) up
to ``SORT_BELOW_PIXELS`` (2**21), and ``compute`` sorts their bins with numpy's vectorised sort instead
(:func:`_sorted_anomaly_bins`: the same bins, counts and tie flags, so the same numbers to the last digit; 12 ms
for 1e6 pixels of any map, where allocating and reading blocks for a map spread over many bins took 28-46 ms).
Past that many pixels, and before anything reads or moves the states (``sync``, ``forward``, ``merge_state``,
``.to()``), the kept pixels go into the histogram, and so does everything after.

Update path. ``update`` computes every pixel's global bin with a few elementwise integer ops
(:func:`bin_index`, the same ops for any sign pattern) and adds it straight into the state
(``scatter_add_`` for the counts, ``scatter_reduce_`` of the anomaly pixels for the flags);
ignored pixels are added with weight 0 rather than removed. The counts are kept in ``LANES = 2``
copies that one 2-D ``scatter_add_`` fills in parallel (half of each batch per lane; a scatter
into a histogram is bound by cache misses, not arithmetic). The pixel's block is looked up in a
table (one gather); on the CPU, pixels whose block has no storage yet are found with one ``min``
(free to read there) and their blocks allocated. Nothing in it is sized by the scores' range, so
the cost per pixel barely depends on the score distribution (``bench/``) and, on a GPU, where all
blocks are allocated at the first update, ``update`` never synchronises.
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
* ``2 * 63 * 2**16 + 1 = 8,257,537`` bins per class (32,256 blocks of 256; a block costs 2 KiB
  of int32 counts for the two lanes + 512 B of uint8 flags). In the centre and outermost bins
  the flags compare only the low mantissa bits, so distinct anomaly scores there may pass for a
  tie group.

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
import threading

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
# scatter runs on one thread). The scatter is bound by cache misses (wide-range maps like entropy touch ~0.5M
# bins per image): two lanes cut it from 8.3 to 4.2 ms per 921,600-pixel image on 2 cores (measured on the
# dense layout), for twice the count memory. compute() sums the lanes. A constant, so states of all ranks match.
LANES = 2
_LOW_MASK = (1 << _SHIFT) - 1  # the mantissa bits below the bin resolution: they tell values in a bin apart
# Two-level state: a key (bin + is_anomaly * CLASS_STRIDE) lives in block key >> BLOCK_BITS; storage is allocated
# per block. 256 bins (1 KiB of int32 per lane) trade allocation granularity (a stray score costs one block;
# measured on 1e6-1e7 Gaussian scores: 4096-bin blocks used 1.5x the memory and took 1.4x as long) against the
# size of the block table (2 x 32,256 int64 entries, 504 KiB). See AnomalyMetrics.
BLOCK_BITS = 8
BLOCK = 1 << BLOCK_BITS
CLASS_STRIDE = -(-NUM_BINS // BLOCK) * BLOCK  # anomaly keys start at a block boundary
NUM_BLOCKS = 2 * CLASS_STRIDE // BLOCK
_NO_BLOCK = -(1 << 40)  # offset of a block without storage: every pool index through it is negative
# A metric that has been fed this many pixels on the CPU allocates every block in key order, so that a pixel's pool
# position is its key (no table lookup: the block lookup costs ~1.8 ms per 1e6 pixels, the full 165 MiB layout
# ~0.1 s once; a GPU starts that way). Small and medium evaluations never get there.
DENSE_AFTER_PIXELS = 50_000_000
# A metric on the CPU keeps its first pixels as they are (their scores and labels, 5 bytes a pixel) up to this many,
# and computes from a numpy sort of their bins (:func:`_sorted_anomaly_bins`): at 1e6 pixels 3-4x faster than
# allocating and reading histogram blocks for scores spread over many bins, with the same bins, counts and flags.
# Past it (or before any sync, merge, forward or move) they go into the histogram, and so does all that follows.
SORT_BELOW_PIXELS = 1 << 21


def _float_bits(x: float) -> int:
    """Signed int32 bit pattern of ``x`` rounded to float32."""
    return struct.unpack("<i", struct.pack("<f", x))[0]


def bin_of(x: float) -> int:
    """Global histogram bin of one score; monotone non-decreasing in ``x``."""
    mag_q = (_float_bits(x) & 0x7FFFFFFF) >> _SHIFT
    mb = min(max(mag_q, _LO_Q), _HI_Q) - _LO_Q
    return _HALF - mb if x < 0 else _HALF + mb


def bin_index(scores: Tensor, out: Tensor | None = None, scratch: Tensor | None = None) -> Tensor:
    """int32 global bin of every score (contiguous float32); elementwise, equal to :func:`bin_of`.

    Sign-magnitude on the bit pattern: clamp the magnitude key ``m`` into the exponent window,
    then ``bin = _HALF + (m - _LO_Q)`` for positive and ``_HALF - (m - _LO_Q)`` for negative
    scores. Branch-free, so every score distribution (one-signed, mixed signs, infinities)
    costs the same seven integer passes. ``out`` and ``scratch``: int32 tensors of the scores' size to write
    into (no allocation: fresh multi-MB buffers cost page faults on every batch).
    """
    bits = scores.view(torch.int32)
    idx = torch.bitwise_and(bits, 0x7FFFFFFF, out=out)  # magnitude bits; also maps -0.0 to +0.0
    idx >>= _SHIFT
    idx.clamp_(_LO_Q, _HI_Q)
    sign = torch.bitwise_right_shift(bits, 31, out=scratch)  # 0 or -1 (arithmetic shift)
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


def pixels_where(values: Tensor, keep: np.ndarray) -> Tensor:
    """The pixels of a CPU map where the flat bool array ``keep`` is True, as a 1-D tensor in row-major order, through
    numpy's boolean indexing: 1.2 ms for a 2048x1024 map where torch's takes 7-11 ms."""
    return torch.from_numpy(values.detach().reshape(-1).numpy()[keep])


def _valid_only(scores: Tensor, labels: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The valid pixels' scores and labels (1-D CPU tensors)."""
    keep = valid.numpy()
    return pixels_where(scores, keep), pixels_where(labels, keep)


_NAN_MESSAGE = "scores contain NaN; anomaly scores must be numbers (+-inf are allowed)"


def _has_nan(scores: Tensor) -> bool:
    """Any NaN? ``max`` propagates NaN: one read-only pass (``isnan(...).any()`` writes a mask first)."""
    return bool(scores.max().isnan())


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
    on_host = _host_sync_is_free(scores.device)
    if valid is not None:
        scores, labels = _valid_only(scores, labels, valid) if on_host else (scores[valid], labels[valid])
    if scores.numel() == 0:
        return None
    if _has_nan(scores):
        raise ValueError(_NAN_MESSAGE)
    if on_host:  # the thread's scratch buffers (no fresh multi-MB tensors), the anomaly pixels' positions once
        idx, sign = _scratch(scores.numel(), scores.device)[:2]
        idx = bin_index(scores, out=idx, scratch=sign)
    else:
        idx = bin_index(scores)
    gmin_t, gmax_t = torch.aminmax(idx)
    gmin, span = int(gmin_t), int(gmax_t) - int(gmin_t) + 1
    idx -= gmin
    if span > idx.numel() and on_host:
        return _sorted_histogram(idx, labels, scores, gmin)
    if span > idx.numel():
        bins, inverse = torch.unique(idx, return_inverse=True)
        k = bins.numel()
        distinct = _distinct(inverse[labels], _low_bits(scores[labels]), k)
        counts = torch.bincount(inverse.add_(labels, alpha=k), minlength=2 * k).view(2, k)
        return bins.long() + gmin, counts, distinct
    if on_host:
        anomalies = _positions(labels)
        distinct = _distinct(idx[anomalies].long(), _low_bits(scores[anomalies]), span)
        idx[anomalies] += span
    else:
        distinct = _distinct(idx[labels].long(), _low_bits(scores[labels]), span)
        idx.add_(labels, alpha=span)
    counts = torch.bincount(idx, minlength=2 * span).view(2, span)
    return gmin, counts, distinct


def _sorted_histogram(idx: Tensor, labels: Tensor, scores: Tensor, gmin: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`histogram`'s sparse case on the CPU, from one numpy sort (vectorised: 7 ms for 1.5M pixels, where
    ``torch.unique(return_inverse=True)`` takes 25 ms): the same occupied bins, counts and flags.

    Each pixel's int32 code is ``bin << 8 | label << 7 | low bits`` (low bits for anomaly pixels only; bins relative
    to ``gmin`` stay below ``2**23``), so the sorted distinct codes give the counts per bin and class, and a bin
    whose anomaly pixels share one value holds exactly one anomaly code (the flags of :func:`_distinct`).
    """
    anomalous = labels.numpy()
    low = _low_bits(scores).numpy()
    codes = idx.numpy() << 8
    codes |= (anomalous * np.uint8(0x80 | _LOW_MASK)) & (low | np.uint8(0x80))  # 0 for normal pixels
    codes.sort()
    starts = np.flatnonzero(np.diff(codes, prepend=codes[0] - 1))  # first position of each distinct code
    group = codes[starts] >> 7  # bin << 1 | label of each distinct code
    first = np.flatnonzero(np.diff(group, prepend=group[0] - 1))  # first distinct code of each (bin, label)
    key, values = group[first], np.diff(first, append=group.size)  # values: distinct codes per (bin, label)
    count = np.diff(starts[first], append=codes.size)  # pixels per (bin, label)
    bin_of_key = key >> 1
    new_bin = np.diff(bin_of_key, prepend=bin_of_key[0] - 1) != 0
    slot = np.cumsum(new_bin) - 1  # each (bin, label)'s bin among the occupied ones
    counts = np.zeros((2, int(slot[-1]) + 1), np.int64)
    counts[key & 1, slot] = count
    # a bin's anomaly pixels share one value iff they hold one code (a bin without anomalies: True, as _distinct)
    distinct = np.ones(counts.shape[1], bool)
    anomaly = (key & 1) == 1
    distinct[slot[anomaly]] = values[anomaly] > 1
    return torch.from_numpy(bin_of_key[new_bin] + gmin), torch.from_numpy(counts), torch.from_numpy(distinct)


def _sorted_anomaly_bins(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """What :func:`_anomaly_bins` makes of a histogram, from 1-D CPU scores and labels directly: every bin holding
    anomaly pixels (its normal and anomaly counts, its tie flag) and the normal pixels between two such bins
    summed, in ascending order. The normal pixels' bins are sorted (numpy's vectorised sort) and only located at
    the anomaly bins (two binary searches each), so the normal bins are never counted one by one; the anomaly
    pixels' codes ``bin << 8 | low bits`` are sorted and run-length counted (a bin of one code is a tie group)."""
    bins = bin_index(scores).numpy()
    anomalous = labels.numpy()
    normal_bins = np.sort(bins[~anomalous])
    codes = bins[anomalous] << 8
    codes |= _low_bits(scores[labels]).numpy()
    codes.sort()
    starts = np.flatnonzero(np.diff(codes, prepend=-1))  # first position of each distinct code
    code_bin = codes[starts] >> 8
    first = np.flatnonzero(np.diff(code_bin, prepend=-1))  # first distinct code of each anomaly bin
    anomaly_bins = code_bin[first]
    k = anomaly_bins.size
    below = np.searchsorted(normal_bins, anomaly_bins, side="left")  # normal pixels below each anomaly bin
    upto = np.searchsorted(normal_bins, anomaly_bins, side="right")  # ... and in it
    counts = np.zeros((2, 2 * k + 1), np.int64)
    counts[0, 0 : 2 * k : 2] = below - np.concatenate([[0], upto[:-1]])  # normals between two anomaly bins
    counts[0, 1 : 2 * k : 2] = upto - below
    counts[0, 2 * k] = normal_bins.size - (upto[-1] if k else 0)
    counts[1, 1 : 2 * k : 2] = np.diff(starts[first], append=codes.size)
    flags = np.zeros(2 * k + 1, bool)
    flags[1 : 2 * k : 2] = np.diff(first, append=code_bin.size) > 1  # more than one anomaly value in the bin
    keep = np.flatnonzero(counts[0] | counts[1])
    return torch.from_numpy(counts[:, keep]), torch.from_numpy(flags[keep])


def _compact(counts: Tensor, distinct: Tensor) -> tuple[Tensor, Tensor]:
    """Keep occupied bins only (counts as int64): empty bins add nothing to any metric."""
    keep = _nonzero(counts.any(0))
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


_SCRATCH = threading.local()


def _scratch(n: int, device: torch.device) -> tuple[Tensor, ...]:
    """int32 key, int32 block, int32 position, int64 index and int32 ones buffers for ``n`` pixels, shared by every
    AnomalyMetrics and per-image :func:`histogram` of this thread (each call finishes with them before the next
    starts) and kept at the largest size seen (a dataset's last, smaller batch gets views): fresh multi-MB buffers cost page faults on
    every batch. The ones are the scatter's weights: a contiguous tensor scatters 15% faster than an expanded one."""
    buffers = getattr(_SCRATCH, "buffers", None)
    # Buffers made under torch.inference_mode (Lightning's test loop) are inference tensors: outside it (a metric
    # updated directly) they cannot be written in place, so they are made anew there.
    stale = buffers is not None and buffers[0].is_inference() and not torch.is_inference_mode_enabled()
    if buffers is None or stale or buffers[0].numel() < n or buffers[0].device != device:
        buffers = (*(torch.empty(n, dtype=dtype, device=device)
                     for dtype in (torch.int32, torch.int32, torch.int32, torch.int64)),
                   torch.ones(n, dtype=torch.int32, device=device))
        _SCRATCH.buffers = buffers
    return tuple(b[:n] for b in buffers)


def _positions(mask: Tensor) -> Tensor:
    """int64 positions of the True entries of a 1-D bool CPU tensor, ascending: numpy's scan of the mask takes
    0.27 ms for 921,600 pixels where ``torch.nonzero`` takes 0.75 ms."""
    return torch.from_numpy(np.flatnonzero(mask.numpy()))


def _grown(pool: Tensor, size: int, used: int) -> Tensor:
    """``pool`` (last dim) moved into uninitialised storage of ``size``, its first ``used`` entries copied."""
    out = torch.empty((*pool.shape[:-1], size), dtype=pool.dtype, device=pool.device)
    out[..., :used] = pool[..., :used]
    return out


def _anomaly_bins(gaps: Tensor, neg: Tensor, pos: Tensor, distinct: Tensor) -> tuple[Tensor, Tensor]:
    """Entries in ascending score order from the detailed blocks: every bin with anomaly pixels on its own, all
    normal pixels between two such bins summed into one entry (empty entries dropped).

    ``neg`` / ``pos`` / ``distinct``: ``(m, width)`` rows (the m blocks holding anomalies), ascending; ``gaps``
    ``(m + 1,)``: normal pixels of the blocks without anomalies before each row (and after the last). ``neg``'s
    dtype is the one its running sums are taken in: int32 when the total fits (a third of int64's memory traffic,
    and torch's row-wise int32 cumsum is ~25x faster than its int64 one), else int64.
    Returns ``(counts (2, k), distinct (k,))``.
    """
    m, width = pos.shape
    where = _nonzero(pos.ravel() > 0)  # anomaly bins, ascending
    row = where // width
    within = torch.cumsum(neg, 1, dtype=neg.dtype)  # normal pixels at or below each bin of its row
    row_totals = within[:, -1].long() if m else gaps.new_zeros(0)
    # normal pixels before each row: the gaps up to it and the rows before it
    before = torch.cumsum(gaps[:m], 0) + torch.cumsum(row_totals, 0) - row_totals
    own = neg.ravel()[where].long()
    below = before[row] + within.ravel()[where]  # normal pixels at or below each anomaly bin
    strictly_below = below - own
    runs = torch.diff(strictly_below, prepend=strictly_below.new_zeros(1))  # normals between anomaly bins
    runs[1:] -= own[:-1]
    total = gaps.sum() + row_totals.sum()
    tail = total - below[-1] if where.numel() else total
    k = where.numel()
    counts = torch.zeros(2, 2 * k + 1, dtype=torch.int64, device=pos.device)
    counts[0, 0 : 2 * k : 2], counts[0, 1 : 2 * k : 2], counts[0, 2 * k] = runs, own, tail
    counts[1, 1 : 2 * k : 2] = pos.ravel()[where]
    flags = torch.zeros(2 * k + 1, dtype=torch.bool, device=pos.device)
    flags[1 : 2 * k : 2] = distinct.ravel()[where]
    keep = _nonzero((counts[0] | counts[1]) != 0)
    return counts[:, keep], flags[keep]


def _nonzero(mask: Tensor) -> Tensor:
    """int64 positions of the True entries of a 1-D bool tensor (numpy's scan on the host)."""
    return _positions(mask) if _host_sync_is_free(mask.device) else torch.nonzero(mask).ravel()


def _relaid(offsets: Tensor, counts: Tensor, low_min: Tensor, low_max: Tensor, wanted: Tensor) -> tuple[Tensor, ...]:
    """An :class:`AnomalyMetrics` state laid out as the blocks ``wanted`` (bool per block, covering every allocated
    one) in ascending block order, without spare blocks: equal ``wanted`` gives equal shapes and positions."""
    device = offsets.device
    blocks = torch.nonzero(wanted.to(device)).ravel()
    new_offsets = torch.full_like(offsets, _NO_BLOCK)
    new_offsets[blocks] = torch.arange(0, blocks.numel() * BLOCK, BLOCK, dtype=offsets.dtype, device=device)
    size = blocks.numel() * BLOCK
    new_counts = torch.zeros(counts.shape[0], size, dtype=counts.dtype, device=device)
    new_min = torch.full((size,), 255, dtype=low_min.dtype, device=device)
    new_max = torch.zeros(size, dtype=low_max.dtype, device=device)
    had = torch.nonzero(offsets >= 0).ravel()
    old_slots, new_slots = offsets[had] // BLOCK, new_offsets[had] // BLOCK
    new_counts.view(counts.shape[0], -1, BLOCK)[:, new_slots] = counts.view(counts.shape[0], -1, BLOCK)[:, old_slots]
    new_min.view(-1, BLOCK)[new_slots] = low_min.view(-1, BLOCK)[old_slots]
    new_max.view(-1, BLOCK)[new_slots] = low_max.view(-1, BLOCK)[old_slots]
    return new_offsets, new_counts, new_min, new_max


class AnomalyMetrics(Metric):
    """Pooled pixel-level AUPR / AUROC / FPR95 (anomaly = positive, higher score = more anomalous).

    ``update(scores, is_anomaly, valid=None)`` accepts tensors of any (equal) shape; pixels with
    ``valid == False`` are dropped (they may hold anything, even NaN). The state is the
    ``(2, NUM_BINS)`` count histogram (normal / anomaly pixels per bin) plus per-bin tie flags,
    stored in blocks of ``BLOCK`` bins allocated when a pixel first falls into them (see
    "State layout" below), so construction is free and memory and ``compute`` scale with the bins
    the scores occupy, not with ``NUM_BINS``. It lives on the metric's device, which must be the
    scores' device (``metric.to(device)``; Lightning moves metrics that are attributes of the module).
    ``update`` adds every pixel with ``scatter_add_`` / ``scatter_reduce_``: no host copy and, on a
    GPU, no host-device sync. See the module docstring for the bin resolution and error bounds.

    State layout (two levels). The global key of a pixel is ``bin + is_anomaly * CLASS_STRIDE``;
    its top bits (``key >> BLOCK_BITS``) name one of ``NUM_BLOCKS`` blocks (``2 x 32,256``: 256
    consecutive bins of one class each). ``offsets`` (int64, one entry per block, 504 KiB) holds where
    a block's counts start in the pool ``counts`` (int32, ``(LANES, blocks * BLOCK)``), or a large
    negative value while the block has no storage; ``low_min`` / ``low_max`` (uint8) run parallel to
    the pool. On the CPU a block is allocated the first time a pixel falls into it (the check is one
    ``min`` over the batch's pool indices; reading it back is free on the host), the pool grows by
    doubling. On a GPU that check would be a host-device sync per batch, so there every block is
    allocated at the first update (the full 132 MiB of counts + 16 MiB of flags: a memset there
    costs microseconds) and ``update`` never syncs.

    DDP / ``merge_state``: two metrics can only be summed element by element when their pools hold
    the same blocks in the same order. Before torchmetrics reduces the states (``_sync_dist``, which
    all ranks call together, and ``_reduce_states`` behind ``merge_state`` and ``forward``), every
    side is laid out canonically: the union of the allocated blocks (all-gathered under DDP: one
    ``NUM_BLOCKS`` int32 vector per rank), in ascending block order. Then every state has the same
    shape on every rank and is reduced with its ``dist_reduce_fx`` (counts summed, flags min / max).
    """

    is_differentiable = False
    higher_is_better = None  # several values: see ``directions``
    directions = ANOMALY  # name -> higher is better, for every value compute() returns
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # per block: start of its counts in the pool, or _NO_BLOCK. Equal on every rank after the canonical
        # layout, so "max" is the identity there.
        self.add_state("offsets", default=torch.full((NUM_BLOCKS,), _NO_BLOCK, dtype=torch.int64), dist_reduce_fx="max")
        # (LANES, blocks * BLOCK): per lane, the counts of the allocated blocks (class-major keys, so a block
        # holds normal or anomaly counts, never both).
        self.add_state("counts", default=torch.zeros(LANES, 0, dtype=torch.int32), dist_reduce_fx="sum")
        self.add_state("pixels", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("nan_pixels", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        # Per pool bin, the smallest and largest low mantissa bits of its *anomaly* pixels: tells tie
        # groups from bins of distinct anomaly scores, for FPR95 (only anomaly blocks are ever written).
        self.add_state("low_min", default=torch.full((0,), 255, dtype=torch.uint8), dist_reduce_fx="min")
        self.add_state("low_max", default=torch.zeros(0, dtype=torch.uint8), dist_reduce_fx="max")
        self._pixels_fed = 0  # host-side upper bound on any bin of this process (see _check_room)
        self._table_writes = 0  # in-place writes of the block table (see _table_facts)
        self._kept: list[tuple[Tensor, Tensor]] = []  # CPU: the first pixels as they are (SORT_BELOW_PIXELS)
        self._kept_pixels = 0

    def reset(self) -> None:
        super().reset()
        self._pixels_fed = 0
        self._kept, self._kept_pixels = [], 0

    def state_bytes(self) -> int:
        """Bytes of state in use: the block table plus the allocated blocks (not counting the pool's spare end,
        reserved by doubling and left unwritten until blocks are allocated there), or the pixels kept as they are."""
        if self._kept_pixels:
            return self._kept_pixels * 5
        return self.offsets.numel() * 8 + self._used_blocks() * BLOCK * (LANES * 4 + 2)

    def update(self, scores: Tensor, is_anomaly: Tensor, valid: Tensor | None = None) -> None:
        if scores.device != self.offsets.device:
            raise ValueError(
                f"AnomalyMetrics: scores are on {scores.device} but the metric state is on {self.offsets.device}; "
                "move the metric to the scores' device with metric.to(scores.device)"
            )
        self._writable_states()
        scores_in = scores
        scores, labels, valid = _flat_inputs(scores, is_anomaly, valid)
        if valid is not None and _host_sync_is_free(scores.device):
            scores, labels = _valid_only(scores, labels, valid)  # cheaper than weights on the host
            valid = None
        n = scores.numel()
        if n == 0:
            return
        self._check_nan(scores, valid)
        if valid is not None and _host_sync_is_free(scores.device) and not bool(valid.any()):
            return  # nothing to count (and maybe no block to point ignored pixels at)
        if valid is None and self._keeps(n):
            # copies: the caller may reuse its tensors (numpy's selection above already made new ones)
            self._kept.append((scores if scores.data_ptr() != scores_in.data_ptr() else scores.clone(),
                               labels.clone()))
            self._kept_pixels += n
            self.pixels.add_(n)
            return
        self._flush()
        self._add(scores, labels, valid)
        self.pixels.add_(n if valid is None else valid.sum())

    def _writable_states(self) -> None:
        """States made under inference mode (Lightning's test loop) cannot be written in place outside it: an
        update there works on copies of them (once), and recomputes the block table's cached facts."""
        if torch.is_inference_mode_enabled():
            return
        for name in self._defaults:
            if getattr(self, name).is_inference():
                setattr(self, name, getattr(self, name).clone())
        if getattr(self, "_facts", None) is not None and self._facts[1].is_inference():
            self._facts_stamp = None

    def _keeps(self, n: int) -> bool:
        """Keep these pixels as they are? On the CPU, while nothing went into the histogram and the kept pixels stay
        within SORT_BELOW_PIXELS."""
        return (_host_sync_is_free(self.offsets.device) and int(self.counts.shape[1]) == 0
                and self._kept_pixels + n <= SORT_BELOW_PIXELS)

    def _flush(self) -> None:
        """Put the kept pixels into the histogram (they were counted in ``pixels`` already)."""
        kept, self._kept, self._kept_pixels = self._kept, [], 0
        for scores, labels in kept:
            self._add(scores, labels, None)

    def _add(self, scores: Tensor, labels: Tensor, valid: Tensor | None) -> None:
        """Count 1-D float32 scores / bool labels (checked) into the histogram. On the host ``valid`` is always
        None: ``update`` has dropped the ignored pixels there."""
        n = scores.numel()
        # on the host, the anomaly pixels' positions, found once: their class keys and tie flags are set through them
        anomalies = _positions(labels) if _host_sync_is_free(scores.device) else None
        index = self._pool_index(scores, labels, anomalies)
        # Ignored pixels are not removed (boolean indexing syncs on a GPU) but added with weight 0.
        weight = _scratch(n, scores.device)[4]
        if valid is not None:
            weight = valid.to(torch.int32)
        self._pixels_fed += n
        if self._pixels_fed > _INT32_MAX:
            self._check_room(index, weight)
        split = n - n % LANES  # the first split pixels go to the lanes in equal parts, a remainder to lane 0
        self.counts.scatter_add_(1, index[:split].view(LANES, -1), weight[:split].view(LANES, -1))
        if split < n:
            self.counts[0].scatter_add_(0, index[split:], weight[split:])
        self._update_tie_flags(scores, index, labels if valid is None else labels & valid, anomalies)

    def _pool_index(self, scores: Tensor, labels: Tensor, anomalies: Tensor | None) -> Tensor:
        """int64 pool position of every pixel (allocating the blocks that the pixels need on the host), computed in
        buffers kept between updates of equal size (images of one size: allocated once). ``anomalies``: the
        anomaly pixels' positions on the host, None on a GPU."""
        n = scores.numel()
        key, block, position, index, _ = _scratch(n, scores.device)
        bin_index(scores, out=key, scratch=block)
        if anomalies is None:
            # finding the blocks a batch reaches would sync: a GPU holds every block, in key order (the dense
            # layout), from its first update on; nothing here reads a device value
            if int(self.counts.shape[1]) == 0:
                self._allocate_all()
            return index.copy_(key.add_(labels, alpha=CLASS_STRIDE))
        key[anomalies] += CLASS_STRIDE  # anomalies are few: cheaper than a pass over every label
        if not self._is_dense() and self._pixels_fed >= DENSE_AFTER_PIXELS:
            self._canonical(torch.ones(NUM_BLOCKS, dtype=torch.bool, device=scores.device))
        if self._is_dense():  # no table lookup, nothing to allocate
            return index.copy_(key)
        torch.bitwise_right_shift(key, BLOCK_BITS, out=block)
        if int(self.counts.shape[1]) == 0:  # the first update: no lookup needed to know every block is missing
            self._allocate(self._reached(block))
        # pool position = key + (block start - block's first key): one gather from the block table, in int32
        # (positions stay below NUM_BLOCKS * BLOCK) and widened once for the scatter
        torch.index_select(self._key_shift(), 0, block, out=position).add_(key)
        if int(position.min()) < 0:  # some blocks have no storage yet (reading it back is free on the host)
            miss = _positions(position < 0)  # after the first batches: a few strays
            if miss.numel() > n // 8:
                self._allocate(self._reached(block))
                torch.index_select(self._key_shift(), 0, block, out=position).add_(key)
            else:
                wanted = block[miss].long()
                seen = torch.zeros(NUM_BLOCKS, dtype=torch.bool, device=scores.device)
                seen.scatter_(0, wanted, True)  # the distinct blocks, without torch.unique's sort
                self._allocate(torch.nonzero(seen).ravel())
                position[miss] = self._key_shift()[wanted] + key[miss]
        return index.copy_(position)

    def _reached(self, block: Tensor) -> Tensor:
        """The blocks that pixels reach and that have no storage yet, ascending."""
        reached = torch.bincount(block, minlength=NUM_BLOCKS) > 0
        return torch.nonzero(reached & (self.offsets < 0)).ravel()

    def _key_shift(self) -> Tensor:
        """Per block, int32: its pool start minus its first key (very negative for a block without storage)."""
        return self._table_facts()[1]

    def _used_blocks(self) -> int:
        """How many blocks have storage (they fill the pool's first ``used * BLOCK`` positions)."""
        return self._table_facts()[0]

    def _table_facts(self) -> tuple[int, Tensor, bool]:
        """(used blocks, key shift, dense?) of the current block table, recomputed only when the table changed: it
        is replaced by reset / sync / unsync (another tensor object; the stamp keeps the old one alive, so its id
        cannot be reused) or written in place by _allocate (which bumps ``_table_writes``; tensors made under
        inference mode have no version counter to read instead)."""
        table = self.offsets
        stamp = getattr(self, "_facts_stamp", None)
        if stamp is None or stamp[0] is not table or stamp[1] != self._table_writes:
            first_key = torch.arange(0, NUM_BLOCKS * BLOCK, BLOCK, dtype=torch.int64, device=table.device)
            # int32, with -2**30 for a block without storage: every key plus that is still negative
            shift = torch.where(table >= 0, table - first_key, -(1 << 30)).to(torch.int32)
            used = int((table >= 0).sum())
            self._facts = (used, shift, used == NUM_BLOCKS and not bool(shift.any()))
            self._facts_stamp = (table, self._table_writes)
        return self._facts

    def _is_dense(self) -> bool:
        """Every block allocated in key order: the pool *is* the dense histogram and a key its position."""
        return self._table_facts()[2]

    def _allocate(self, blocks: Tensor) -> None:
        """Give zeroed storage to ``blocks`` (none allocated yet, ascending) after the allocated ones. The pool
        grows to at least twice what it holds, so a run of allocations copies it O(log blocks) times; its spare end
        stays untouched (not even zeroed) until blocks are allocated there, so it costs address space, not memory."""
        used, shift, _ = self._table_facts()
        need = used + int(blocks.numel())
        if need * BLOCK > self.counts.shape[1]:
            # room for as many blocks again: the strays of later batches seldom grow (copy) the pool again
            capacity = min(max(2 * need, 2 * self.counts.shape[1] // BLOCK), NUM_BLOCKS) * BLOCK
            self.counts, self.low_min, self.low_max = (
                _grown(pool, capacity, used * BLOCK) for pool in (self.counts, self.low_min, self.low_max))
        starts = torch.arange(used * BLOCK, need * BLOCK, BLOCK, dtype=torch.int64, device=blocks.device)
        self.offsets[blocks] = starts
        self._table_writes += 1
        self.counts[:, used * BLOCK : need * BLOCK] = 0
        self.low_min[used * BLOCK : need * BLOCK] = 255
        self.low_max[used * BLOCK : need * BLOCK] = 0
        # the table's facts, updated for these blocks (recomputing them reads the whole table)
        shift[blocks] = (starts - blocks * BLOCK).to(torch.int32)
        self._facts = (need, shift, need == NUM_BLOCKS and not bool(shift.any()))
        self._facts_stamp = (self.offsets, self._table_writes)

    def _allocate_all(self) -> None:
        """Every block, in key order (the dense layout), zeroed; reads no device value (no sync)."""
        device = self.offsets.device
        self.offsets = torch.arange(0, NUM_BLOCKS * BLOCK, BLOCK, dtype=torch.int64, device=device)
        self.counts = torch.zeros(LANES, NUM_BLOCKS * BLOCK, dtype=torch.int32, device=device)
        self.low_min = torch.full((NUM_BLOCKS * BLOCK,), 255, dtype=torch.uint8, device=device)
        self.low_max = torch.zeros(NUM_BLOCKS * BLOCK, dtype=torch.uint8, device=device)

    def _check_nan(self, scores: Tensor, valid: Tensor | None) -> None:
        """NaN in valid pixels: raise now on the host (free there); count on a GPU for compute()."""
        on_host = _host_sync_is_free(scores.device)
        if on_host and valid is None:
            if _has_nan(scores):
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

    def _update_tie_flags(self, scores: Tensor, index: Tensor, anomaly: Tensor, anomalies: Tensor | None) -> None:
        """Fold the anomaly pixels' low mantissa bits into the per-bin min/max flags. ``anomalies``: the anomaly
        pixels' positions on the host (they are few), None on a GPU."""
        if anomalies is not None:
            bins, low_min = index[anomalies], _low_bits(scores[anomalies])
            low_max = low_min
        else:  # gathering would sync; other pixels get neutral values instead
            bins = index
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
        near_full = self.counts[:, flat].sum(0, dtype=torch.int64) + flat.numel() > _INT32_MAX
        if not bool(near_full.any()):
            return
        bins, adds = torch.unique(flat[near_full & (weight > 0)], return_counts=True)
        if bool((self.counts[:, bins].sum(0, dtype=torch.int64) + adds > _INT32_MAX).any()):
            raise ValueError(f"more than {_INT32_MAX} pixels in one score bin; int32 counts would overflow")

    # ------------------------------------------------------------------ canonical layout (DDP, merge_state)
    def _canonical(self, wanted: Tensor) -> None:
        """Lay the pool out as the blocks ``wanted`` (bool per block, a superset of the allocated ones) in
        ascending block order, so that states of equal ``wanted`` have equal shapes and positions."""
        state = _relaid(self.offsets, self.counts, self.low_min, self.low_max, wanted)
        self.offsets, self.counts, self.low_min, self.low_max = state

    def _copy_state_dict(self) -> dict:
        self._flush()  # sync() caches the states, forward() keeps them aside: the kept pixels must be in them
        return super()._copy_state_dict()

    @property
    def metric_state(self) -> dict:
        self._flush()  # merge_state(other metric) reads it
        return super().metric_state

    def _apply(self, fn, *args, **kwargs):
        self._flush()  # the kept pixels are CPU tensors: into the states, which move
        return super()._apply(fn, *args, **kwargs)

    def _sync_dist(self, dist_sync_fn=None, process_group=None) -> None:
        from torchmetrics.utilities.distributed import gather_all_tensors

        dist_sync_fn = dist_sync_fn or gather_all_tensors
        mine = (self.offsets >= 0).to(torch.int32)
        union = torch.stack(dist_sync_fn(mine, group=process_group)).amax(0) > 0
        self._canonical(union)
        super()._sync_dist(dist_sync_fn, process_group)

    def _reduce_states(self, incoming_state: dict) -> None:
        self._flush()
        incoming = dict(incoming_state)
        union = (self.offsets >= 0) | (incoming["offsets"].to(self.offsets.device) >= 0)
        self._canonical(union)
        state = _relaid(incoming["offsets"], incoming["counts"], incoming["low_min"], incoming["low_max"], union)
        incoming.update(zip(("offsets", "counts", "low_min", "low_max"), state))
        super()._reduce_states(incoming)

    # ------------------------------------------------------------------ results
    def _occupied(self) -> tuple[Tensor, Tensor]:
        """Bins in ascending score order: int64 counts ``(2, k)`` (normal, anomaly) and ``distinct`` flags
        ``(k,)``, after the sanity checks. Touches the allocated blocks only, and keeps the bins every metric
        needs: each bin holding anomaly pixels, with the normal pixels between two of them merged into one
        entry (AUROC, AUPR, FPR95, their error bounds and the curves' points at anomaly bins read only the
        normal counts per anomaly bin and cumulated above it, which the merge keeps exactly).
        """
        if int(self.nan_pixels):
            raise ValueError(f"{int(self.nan_pixels)} valid pixels had NaN scores; " + _NAN_MESSAGE)
        if self._kept:
            return self._kept_bins()
        used = self._used_blocks()
        if used == 0 or int(self.pixels) == 0:
            raise ValueError("AnomalyMetrics.compute() called before any pixel was added via update()")
        # lanes summed in int32: _check_room keeps every bin's lane total below 2**31; one that wrapped anyway (a
        # DDP sum or merge_state past int32) lowers the int64 total by 2**32, which the check below catches.
        lanes = self.counts[:, : used * BLOCK].view(LANES, used, BLOCK)
        # Up to 2**31 - 1 pixels no bin can wrap and every sum of bins fits int32: sums are taken in int32 then
        # (a widened copy of the pool costs page faults: 1.2 -> 5 ms at 12k blocks), beyond it in int64.
        wide = torch.int32 if int(self.pixels) <= _INT32_MAX else torch.int64
        totals = lanes.sum(2, dtype=wide).sum(0, dtype=torch.int64)  # per slot; no lane-summed copy of the pool

        def pool(slots: Tensor) -> Tensor:  # these slots' bins, lanes summed (a 2-row sum(0) is 10x slower)
            return lanes[0, slots].add_(lanes[1, slots]) if LANES == 2 else lanes[:, slots].sum(0, dtype=torch.int32)

        if int(totals.sum()) != int(self.pixels):
            raise ValueError("score histogram overflowed (over 2**31-1 pixels in one bin after the DDP sum)")
        # blocks that hold pixels (an allocated block can be empty: the dense layout, or ignored pixels only)
        filled = torch.zeros(NUM_BLOCKS, dtype=torch.bool, device=totals.device)
        filled[self.offsets >= 0] = totals[self.offsets[self.offsets >= 0] // BLOCK] > 0
        normal, anomaly = torch.where(filled, self.offsets, _NO_BLOCK).view(2, NUM_BLOCKS // 2)
        detailed = torch.nonzero(anomaly >= 0).ravel()  # blocks with anomaly pixels: read bin by bin
        slots = anomaly[detailed] // BLOCK
        pos = pool(slots)
        paired = normal[detailed] >= 0  # an anomaly block whose normal twin has no storage reads zeros
        neg = pool(torch.where(paired, normal[detailed] // BLOCK, 0)).mul_(paired[:, None]).to(wide)
        distinct = self.low_min.view(-1, BLOCK)[slots] != self.low_max.view(-1, BLOCK)[slots]
        # blocks of normal pixels only: their totals, added to the gap before the next detailed block
        alone = torch.nonzero((normal >= 0) & (anomaly < 0)).ravel()
        gaps = torch.zeros(detailed.numel() + 1, dtype=torch.int64, device=totals.device)
        gaps.index_add_(0, torch.searchsorted(detailed, alone), totals[normal[alone] // BLOCK])
        return _anomaly_bins(gaps, neg, pos, distinct)

    def _kept_bins(self) -> tuple[Tensor, Tensor]:
        """:meth:`_occupied` of the kept pixels (:func:`_sorted_anomaly_bins`)."""
        scores = torch.cat([s for s, _ in self._kept]) if len(self._kept) > 1 else self._kept[0][0]
        labels = torch.cat([y for _, y in self._kept]) if len(self._kept) > 1 else self._kept[0][1]
        return _sorted_anomaly_bins(scores, labels)

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
