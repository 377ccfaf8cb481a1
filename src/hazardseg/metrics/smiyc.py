"""SegmentMeIfYouCan (SMIYC) evaluation convention: pixel metrics from per-frame percentile bins, and
component (segment) metrics.

Reference: Chan et al., "SegmentMeIfYouCan: A Benchmark for Anomaly Segmentation", NeurIPS 2021 Datasets and
Benchmarks. The definitions below are those computed by the benchmark's own code
(``SegmentMeIfYouCan/road-anomaly-benchmark``, commit 1c7804e, ``metrics/pixel_classification.py``,
``pixel_classification_curves.py``, ``instance_segmentation.py``) under the numpy it pins (1.23); this module is
written from those definitions (no code copied) and checked against that code on exported maps.

Inputs are the **float16** score maps of the submission format (higher = more anomalous) and labels with
0 normal, 1 anomaly, 255 void.

Pixel level ("PixBinaryClass"), :class:`SmiycPixelMetric`:

* per frame, over the ROI (label < 255): thresholds = the 384 linear-interpolation quantiles of the scores at
  anomaly pixels, the 384 at normal pixels (fewer when a class has fewer pixels) and ``vmin - eps``,
  ``vmax + eps`` with ``eps = max(0.01 * (vmax - vmin), 0.01)``, deduplicated; the frame's anomaly / normal
  pixels are counted per bin ``[t_i, t_i+1)``, and each bin is labelled with its lower edge;
* the bins of all frames are pooled: sorted by threshold (descending), cumulated into TP/FP counts; of equal
  thresholds only the last (fully accumulated) point is kept; the curve gets the end points (0, 0) and (P, N);
* ``AP = sum(diff(recall) * precision[1:])`` (precision 1 where nothing is predicted), ``AUROC`` = trapezoid
  of TPR over FPR, ``FPR95 = FPR[first index with TPR >= 0.95]`` (1.0 if never reached), best F1 = max of
  ``2TP / (2TP + FP + FN)`` and its threshold (the bin edge).

State per frame: at most 769 thresholds and two counts each (about 18 KB), kept as ``cat`` states so DDP
gathers them. The per-frame work uses a 65,536-bin histogram of the float16 codes instead of sorting the
frame (2048x1024 frame, measured: ~25 ms instead of ~350 ms for ``np.quantile`` + ``np.histogram``); it reproduces
``np.quantile``'s interpolation arithmetic exactly (float16 difference, float64 interpolation).

Component level ("SegEval-AnomalyTrack" / "SegEval-ObstacleTrack"), :class:`SmiycComponentMetric`:

* binarise ``score > t`` (``t`` = the best-F1 threshold of the pixel curve, compared in float16 as the
  benchmark's numpy does) and zero the prediction on void;
* 8-connected components (:func:`scipy.ndimage.label`, 3x3 structure) of the prediction and of the anomaly
  label; predicted components smaller than ``min_pred_size`` are dropped, ground-truth components smaller than
  ``min_gt_size`` become void; everything is then restricted to the ROI (label < 255);
* per ground-truth component ``i`` with ``K`` = the predicted components that overlap it:
  ``sIoU = |i & K| / (|K| + |i| - |i & K| - |K on other GT components|)``; per predicted component ``k``:
  ``PPV = |k on GT| / |k|`` (and ``sIoU_pred``, the symmetric quantity);
* for each ``t`` in ``linspace(0.25, 0.75, 11)``: ``TP = #(sIoU >= t)``, ``FN = #(sIoU < t)``,
  ``FP = #(PPV < t)``, summed over frames; ``F1 = 2TP / (2TP + FN + FP)``; ``mean_F1`` = mean over the 11;
  ``sIoU_gt`` / ``PPV`` = means over all components of the dataset.

Size filters: AnomalyTrack (RoadAnomaly21, Fishyscapes L&F in the benchmark's README) 500 / 100 px,
ObstacleTrack (RoadObstacle21, LostAndFound-testNoKnown) 50 / 10 px. State: three float64 values per
component (only component statistics are kept). The maps are needed once more after the pixel pass (the
threshold is known only then): :class:`hazardseg.metrics.benchmark.BenchmarkEvaluator` reads them back from
the float16 files it exported.

Benchmark quirks. (1) The benchmark's curve also keeps its first sorted entry as a point even when that
threshold is shared with the next entries; when several frames share the *top* threshold (typically maps
saturated at 1.0) that point holds one arbitrary frame's top bin, chosen by an unstable argsort over frames in
the order the benchmark's worker pool returns them: its AP then changes with the frame order (measured: 0.878
vs 0.897 for the same two frames in two orders). We report the order-independent value (equal to the
benchmark's whenever the top threshold is not tied) and the interval the benchmark's value can take
(``AP_tie_min/max``, ``AUROC_tie_min/max``). (2) ``thresh_p`` is compared with the float16 map in float16, as
under the benchmark's pinned numpy 1.23 (numpy 2 would compare a float64 threshold in float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

QUANTILES_PER_CLASS = 384  # "num_bins = 768" split between the anomaly and the normal pixels
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11, endpoint=True)
CONNECTIVITY = np.ones((3, 3), dtype=np.uint8)  # 8-connectivity


@dataclass(frozen=True)
class ComponentFilter:
    min_pred_size: int  # predicted components smaller than this are dropped
    min_gt_size: int  # ground-truth components smaller than this become void


# metrics/instance_segmentation.py: SegEval-AnomalyTrack and SegEval-ObstacleTrack
COMPONENT_FILTERS = {"anomaly": ComponentFilter(500, 100), "obstacle": ComponentFilter(50, 10)}


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _frames(scores, labels) -> list[tuple[np.ndarray, np.ndarray]]:
    """(H,W) or (B,H,W) inputs -> list of (float16 map, label) pairs of equal shape."""
    s, y = _to_numpy(scores), _to_numpy(labels)
    if s.dtype != np.float16:
        raise TypeError(
            f"SMIYC metrics score the exported float16 maps, got {s.dtype}; encode them with "
            f"hazardseg.metrics.submission.Float16Encoder first"
        )
    if s.shape != y.shape or s.ndim not in (2, 3):
        raise ValueError(f"expected score maps and labels of equal shape (H,W) or (B,H,W), got {s.shape} and {y.shape}")
    return [(s, y)] if s.ndim == 2 else list(zip(s, y))


# ------------------------------------------------------------------------------------------------
# float16 codes: a frame is histogrammed over its 65,536 bit patterns, never sorted
# ------------------------------------------------------------------------------------------------
def _value_order() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(1 << 16, dtype=np.uint16)
    values = codes.view(np.float16).astype(np.float64)
    finite_or_inf = ~np.isnan(values)
    order = np.flatnonzero(finite_or_inf)[np.argsort(values[finite_or_inf], kind="stable")]
    return order, np.flatnonzero(~finite_or_inf)


# bit patterns in ascending value order (NaN patterns left out), and the NaN patterns
CODE_ORDER, NAN_CODES = _value_order()
# label value -> offset of its class in the joint histogram: 0 normal, 1 anomaly (any other value < 255), 2 void
_CLASS_OFFSET = np.full(256, 1 << 16, np.int32)
_CLASS_OFFSET[0], _CLASS_OFFSET[255] = 0, 2 << 16


def _quantiles(values: np.ndarray, counts: np.ndarray, num: int) -> np.ndarray:
    """``np.quantile(data, np.linspace(0, 1, num))`` ('linear') of float16 data given as sorted distinct
    ``values`` with ``counts``: same index arithmetic, float16 difference ``b - a``, float64 interpolation."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    virtual = (n - 1) * np.linspace(0, 1, num)
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1
    prev[above] = -1  # numpy's "last element" index; gamma is then computed against it
    nxt[above] = -1
    gamma = virtual - prev
    prev_pos = np.where(prev < 0, n - 1, prev).astype(np.int64)
    next_pos = np.where(nxt < 0, n - 1, nxt).astype(np.int64)
    a = values[np.searchsorted(cum, prev_pos, side="right")]
    b = values[np.searchsorted(cum, next_pos, side="right")]
    diff = b - a  # float16, as numpy's lerp subtracts in the data dtype
    low = a + diff * gamma
    high = b - diff * (1 - gamma)
    return np.where(gamma >= 0.5, high, low)


@dataclass
class FrameBins:
    """One frame's contribution to the pixel curve, thresholds descending."""

    thresholds: np.ndarray  # float64 (k,)
    tp_rel: np.ndarray  # int64 (k,) anomaly pixels in [threshold_i, next higher edge)
    fp_rel: np.ndarray  # int64 (k,) normal pixels in the same bin
    num_pos: int
    num_neg: int


def class_offsets(labels: np.ndarray) -> np.ndarray:
    """int32 per pixel: where its class starts in the joint (normal, anomaly, void) histogram of float16 codes.
    The same for every scorer of a frame: :class:`~hazardseg.metrics.benchmark.LabelledFrames` computes it once."""
    if labels.dtype == np.uint8:
        return _CLASS_OFFSET[labels]
    # wider label types: same classes (label < 255 is ROI, 0 normal, other ROI values anomaly)
    return np.where(labels >= 255, 2, (labels != 0).astype(np.int32)).astype(np.int32) << 16


def frame_bins(scores16: np.ndarray, labels: np.ndarray, offsets: np.ndarray | None = None) -> FrameBins | None:
    """Per-frame percentile bins of the SMIYC pixel metric; None when the frame has no ROI pixel. ``offsets``:
    :func:`class_offsets` of ``labels`` if already known."""
    index = (class_offsets(labels) if offsets is None else offsets) + scores16.view(np.uint16)
    # torch's bincount takes the int32 index as it is (numpy's converts it to int64 first: 2.7x the time)
    counts = torch.bincount(torch.from_numpy(index.ravel()), minlength=3 << 16).numpy().reshape(3, 1 << 16)[:2]
    if counts[:, NAN_CODES].any():
        raise ValueError("score map contains NaN; anomaly scores must be numbers")
    counts = counts[:, CODE_ORDER]
    present = np.flatnonzero(counts.sum(0))
    if present.size == 0:
        return None
    values = CODE_ORDER[present].astype(np.uint16).view(np.float16)
    neg, pos = counts[0, present], counts[1, present]
    num_neg, num_pos = int(neg.sum()), int(pos.sum())
    vmin, vmax = values[0], values[-1]
    vrange = np.float16(vmax - vmin)  # float16 arithmetic, as on the benchmark's float16 map
    # numpy 1.23 (pinned by the benchmark) promotes these float16 scalars to float64 here
    eps = max(float(vrange) * 1e-2, 1e-2)
    parts = [np.array([float(vmin) - eps, float(vmax) + eps])]
    for cls_counts in (pos, neg):
        total = int(cls_counts.sum())
        if total:
            keep = cls_counts > 0
            parts.append(_quantiles(values[keep], cls_counts[keep], min(QUANTILES_PER_CLASS, total)))
    edges = np.unique(np.concatenate(parts))
    # pixels below each edge (np.histogram compares in float64; the top edge lies above every score)
    below = np.searchsorted(values.astype(np.float64), edges, side="left")
    cum_pos = np.concatenate([[0], np.cumsum(pos)])[below]
    cum_neg = np.concatenate([[0], np.cumsum(neg)])[below]
    return FrameBins(
        thresholds=edges[:-1][::-1].copy(),
        tp_rel=np.diff(cum_pos)[::-1].astype(np.int64),
        fp_rel=np.diff(cum_neg)[::-1].astype(np.int64),
        num_pos=num_pos,
        num_neg=num_neg,
    )


def pixel_metrics(thresholds: np.ndarray, tp_rel: np.ndarray, fp_rel: np.ndarray, num_pos: int, num_neg: int) -> dict[str, float]:
    """AP, AUROC, FPR95 and best F1 of the pooled SMIYC curve (see the module docstring).

    When several frames share the top threshold, the benchmark's curve also keeps the *first* of the tied
    entries as a point of its own, so its AP and AUROC depend on which frame its unstable argsort puts first
    (and on the order its worker pool returns frames). We keep only fully accumulated points (the value the
    benchmark gives whenever the top threshold is not tied) and report the interval the benchmark's value can
    take as ``AP_tie_min/max`` and ``AUROC_tie_min/max`` (with ``top_threshold_ties``, the number of tied frames).
    """
    if num_pos == 0 or num_neg == 0:
        what = "anomaly" if num_pos == 0 else "normal"
        raise ValueError(f"no {what} pixels in the scored frames; AP/AUROC/FPR95 need both classes")
    order = np.argsort(thresholds, kind="stable")[::-1]
    thr = thresholds[order]
    tp = np.cumsum(tp_rel[order].astype(np.float64))
    fp = np.cumsum(fp_rel[order].astype(np.float64))
    run_ends = np.r_[np.nonzero(thr[:-1] != thr[1:])[0], len(thr) - 1]  # all entries of a threshold counted
    ties = int(run_ends[0]) + 1  # entries (frames) sharing the top threshold
    tp, fp, thr = tp[run_ends], fp[run_ends], thr[run_ends]
    if tp[0] != 0 or fp[0] != 0:  # the curve starts at (0, 0)
        tp, fp, thr = np.r_[0, tp], np.r_[0, fp], np.r_[float(np.max(thr)) + 1, thr]
    if tp[-1] != num_pos or fp[-1] != num_neg:  # ... and ends at (P, N)
        tp, fp, thr = np.r_[tp, num_pos], np.r_[fp, num_neg], np.r_[thr, float(np.max(thr)) - 1]
    fn = num_pos - tp
    tpr, fpr = tp / num_pos, fp / num_neg
    predicted = tp + fp
    precision = np.ones(len(tp))
    precision[predicted > 0] = tp[predicted > 0] / predicted[predicted > 0]
    f1 = 2 * tp / (2 * tp + fp + fn)
    i95 = int(np.searchsorted(tpr, 0.95))
    best = int(np.nanargmax(f1))
    out = {
        "AP": float(np.sum(np.diff(tpr) * precision[1:])),
        "AUROC": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        "FPR95": float(fpr[i95]) if i95 < len(tpr) else 1.0,
        "FPR95_threshold": float(thr[i95]) if i95 < len(tpr) else 0.0,
        "best_F1": float(f1[best]),
        "best_F1_threshold": float(thr[best]),
    }
    if ties > 1:
        out.update(_tie_interval(tp_rel[order[:ties]], fp_rel[order[:ties]], tpr[1], fpr[1], precision[1], num_pos, num_neg, out))
        out["top_threshold_ties"] = ties
    return out


def _tie_interval(tp_c, fp_c, tpr1, fpr1, prec1, num_pos, num_neg, free) -> dict[str, float]:
    """AP / AUROC of the benchmark's curve for each possible extra first point (one tied entry's counts)
    before the first fully accumulated point (tpr1, fpr1, prec1)."""
    tpr_c, fpr_c = tp_c / num_pos, fp_c / num_neg
    prec_c = np.where(tp_c + fp_c > 0, tp_c / np.maximum(tp_c + fp_c, 1), 1.0)
    ap = free["AP"] - tpr1 * prec1 + tpr_c * prec_c + (tpr1 - tpr_c) * prec1
    auroc = free["AUROC"] - fpr1 * tpr1 / 2 + fpr_c * tpr_c / 2 + (fpr1 - fpr_c) * (tpr_c + tpr1) / 2
    return {"AP_tie_min": float(ap.min()), "AP_tie_max": float(ap.max()),
            "AUROC_tie_min": float(auroc.min()), "AUROC_tie_max": float(auroc.max())}


class SmiycPixelMetric(Metric):
    """SMIYC pixel metrics (AP, AUROC, FPR95, best F1 and its threshold) of float16 score maps.

    ``update(scores16, labels)``: one frame (H,W) or a batch (B,H,W) of equal-size frames; numpy or torch;
    labels 0 normal / 1 anomaly / 255 void. Frames without ROI pixels add nothing. ``compute()`` raises
    ValueError when no anomaly or no normal pixel was seen.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("thresholds", default=[], dist_reduce_fx="cat")
        self.add_state("tp_rel", default=[], dist_reduce_fx="cat")
        self.add_state("fp_rel", default=[], dist_reduce_fx="cat")
        self.add_state("num_pos", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_neg", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_frames", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, scores16, labels, offsets: np.ndarray | None = None) -> None:
        """``offsets``: :func:`class_offsets` of a single frame's labels, if already known."""
        for s, y in _frames(scores16, labels):
            bins = frame_bins(s, y, offsets)
            if bins is None:
                continue
            self.thresholds.append(torch.from_numpy(bins.thresholds).to(self.device))
            self.tp_rel.append(torch.from_numpy(bins.tp_rel).to(self.device))
            self.fp_rel.append(torch.from_numpy(bins.fp_rel).to(self.device))
            self.num_pos += bins.num_pos
            self.num_neg += bins.num_neg
            self.num_frames += 1

    def compute(self) -> dict[str, float]:
        if int(self.num_frames) == 0:
            raise ValueError("SmiycPixelMetric.compute() before any labelled frame was added")
        values = pixel_metrics(
            dim_zero_cat(self.thresholds).cpu().numpy(), dim_zero_cat(self.tp_rel).cpu().numpy(),
            dim_zero_cat(self.fp_rel).cpu().numpy(), int(self.num_pos), int(self.num_neg),
        )
        values["num_frames"] = int(self.num_frames)
        return values


# ------------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------------
@dataclass
class FrameComponents:
    siou_gt: np.ndarray  # per ground-truth component (ascending component id)
    siou_pred: np.ndarray  # per predicted component
    ppv: np.ndarray  # per predicted component


@dataclass
class FrameGroundTruth:
    """What the component metrics need of one labelled frame, whatever the scorer: computed once per frame and
    shared by every scorer (:class:`hazardseg.metrics.benchmark.BenchmarkEvaluator` runs its component pass
    frame by frame over all scorers)."""

    shape: tuple[int, int]
    roi: np.ndarray  # flat indices of the ROI (label < 255) pixels, ascending
    gt_pixels: np.ndarray  # flat indices of the anomaly pixels, ascending
    gt_component: np.ndarray  # int64, per anomaly pixel: its 8-connected ground-truth component (1..n_gt)
    n_gt: int
    small_gt: np.ndarray  # bool (n_gt + 1,): components that become void (0 = the non-anomaly area)

    @classmethod
    def of(cls, labels: np.ndarray, flt: ComponentFilter) -> FrameGroundTruth:
        gt = labels == 1
        gt_cc, n_gt = ndimage.label(gt, structure=CONNECTIVITY)
        gt_pixels = np.flatnonzero(gt)
        gt_component = gt_cc.ravel()[gt_pixels].astype(np.int64)
        # small GT components become void; so does "component 0" (the non-anomaly area) if it is that small, as in
        # the benchmark
        small_gt = np.bincount(gt_component, minlength=n_gt + 1) < flt.min_gt_size
        small_gt[0] = labels.size - gt_pixels.size < flt.min_gt_size
        return cls(labels.shape, np.flatnonzero(labels != 255), gt_pixels, gt_component, n_gt, small_gt)


def frame_components(scores16: np.ndarray, labels: np.ndarray, threshold: float, flt: ComponentFilter) -> FrameComponents:
    """Component statistics of one frame (see the module docstring)."""
    truth = FrameGroundTruth.of(labels, flt)
    return components_of(truth, scores16.ravel()[truth.roi], threshold, flt)


# A prediction covering more than 1/DENSE_PREDICTION of the ROI is labelled from a full-frame mask (vectorised passes);
# a smaller one from its pixel list (work proportional to it). Measured (components_of at 2048x1024): list 14.6 /
# masks 17.8 ms for 1.6e4 predicted pixels, 18.6 / 19.2 ms for 9.3e4 (6% of the ROI), 28.1 / 22.0 ms for 4.3e5.
DENSE_PREDICTION = 16


def _label_prediction(truth: FrameGroundTruth, hit: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """8-connected components of the predicted pixels (``hit``: per ROI pixel), labelled inside the rows and
    columns they span: (the labelled box, the number of components, the box's top row and left column)."""
    height, width = truth.shape
    if np.count_nonzero(hit) > truth.roi.size // DENSE_PREDICTION:
        mask = np.zeros(height * width, bool)
        mask[truth.roi] = hit
        grid = mask.reshape(height, width)
        rows, cols = np.flatnonzero(grid.any(1)), np.flatnonzero(grid.any(0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = grid[r0:r1, c0:c1]
    else:
        predicted = truth.roi[hit]
        if predicted.size == 0:
            return np.zeros((0, 0), np.int32), 0, 0, 0
        rows, cols = np.divmod(predicted, width)
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols.min()), int(cols.max()) + 1
        box = np.zeros((r1 - r0, c1 - c0), bool)
        box[rows - r0, cols - c0] = True
    box_cc, n_pred = ndimage.label(box, structure=CONNECTIVITY)
    return box_cc, n_pred, r0, c0


def _labels_at(box_cc: np.ndarray, r0: int, c0: int, pixels: np.ndarray, width: int) -> np.ndarray:
    """The component of each of the flat ``pixels`` in a box labelled by :func:`_label_prediction` (0 outside it)."""
    rows, cols = np.divmod(pixels, width)
    rows, cols = rows - r0, cols - c0
    inside = (rows >= 0) & (rows < box_cc.shape[0]) & (cols >= 0) & (cols < box_cc.shape[1])
    out = np.zeros(pixels.size, np.int64)
    out[inside] = box_cc[rows[inside], cols[inside]]
    return out


def _ordered16(values: np.ndarray) -> np.ndarray:
    """int16 keys of float16 values (no NaN) in the same order: sign-magnitude bits to two's complement."""
    bits = values.view(np.int16)
    return bits ^ ((bits >> 15) & np.int16(0x7FFF))


def above(scores16: np.ndarray, threshold: float) -> np.ndarray:
    """``scores16 > float16(threshold)`` for float16 scores without NaN (the metrics refuse NaN before), compared as
    int16 keys: 0.8 ms for 1.5M values where numpy's float16 comparison takes 5 ms. ``-0.0`` as the threshold is
    taken as ``+0.0``, which the float comparison treats as equal to it."""
    with np.errstate(over="ignore"):  # a threshold beyond float16's range becomes +-inf, as np.float16() makes it
        t = np.array([threshold], np.float16)
    t[t == 0] = 0  # -0.0 -> +0.0: its key would sit below +0.0's
    return _ordered16(scores16) > _ordered16(t)[0]


def components_of(truth: FrameGroundTruth, roi_scores16: np.ndarray, threshold: float, flt: ComponentFilter) -> FrameComponents:
    """Component statistics of one frame from its ground truth and the float16 scores of its ROI pixels (in
    ``truth.roi`` order). The prediction is labelled inside its bounding box, its components' sizes are counted once,
    and the (GT component, predicted component) overlaps come from the ground-truth pixels through a sparse table,
    instead of the benchmark's full-frame scans per component; the numbers are the same."""
    hit = above(roi_scores16, threshold)  # void is never predicted
    box_cc, n_pred, r0, c0 = _label_prediction(truth, hit)
    n_gt = truth.n_gt
    # drop small predictions (sizes over the whole frame, void already excluded), renumber the rest 1..m
    # torch's bincount counts the int32 labels as they are (numpy's converts them to int64 first: 2.7x the time)
    sizes = torch.bincount(torch.from_numpy(box_cc.ravel()), minlength=n_pred + 1).numpy()
    kept = sizes >= flt.min_pred_size
    kept[0] = False
    m = int(kept.sum())
    renumber = np.zeros(n_pred + 1, np.int64)
    renumber[kept] = np.arange(1, m + 1)
    # Only ground-truth pixels can be on a GT component, so the overlaps come from them alone: their GT component
    # and predicted component. Small GT components (and a small non-anomaly area) become void; then everything is
    # restricted to the ROI: a predicted component keeps its pixels that did not become void.
    g = truth.gt_component
    p = renumber[_labels_at(box_cc, r0, c0, truth.gt_pixels, truth.shape[1])]
    void = truth.small_gt[g]
    if truth.small_gt[0]:  # predicted pixels off the GT became void too: only those on kept GT components count
        size_p = np.bincount(p[~void], minlength=m + 1)
    else:
        size_p = np.concatenate([[0], sizes[kept]]) - np.bincount(p[void], minlength=m + 1)
    g, p = g[~void], p[~void]
    size_g = np.bincount(g, minlength=n_gt + 1)  # [0] (the non-anomaly area) is not used
    both = p > 0  # g > 0: every pixel here is on a GT component
    codes = g[both] * (m + 1) + p[both]
    if (n_gt + 1) * (m + 1) <= max(4 * codes.size, 1 << 16):  # few components: count pairs without sorting
        overlap = np.bincount(codes, minlength=(n_gt + 1) * (m + 1))
        codes = np.flatnonzero(overlap)
        overlap = overlap[codes]
    else:
        codes, overlap = np.unique(codes, return_counts=True)
    pair_g, pair_p = codes // (m + 1), codes % (m + 1)
    on_gt = np.bincount(pair_p, weights=overlap, minlength=m + 1).astype(np.int64)  # pixels of k on any GT
    on_pred = np.bincount(pair_g, weights=overlap, minlength=n_gt + 1).astype(np.int64)  # pixels of i predicted
    gt_ids = np.flatnonzero(size_g[1:]) + 1
    pred_ids = np.flatnonzero(size_p[1:]) + 1
    # GT component i: |K| and the pixels of K on other GT components, summed over the pairs (i, k)
    k_size = np.bincount(pair_g, weights=size_p[pair_p], minlength=n_gt + 1).astype(np.int64)
    k_elsewhere = np.bincount(pair_g, weights=on_gt[pair_p] - overlap, minlength=n_gt + 1).astype(np.int64)
    union_g = k_size + size_g - on_pred - k_elsewhere
    # predicted component k: the symmetric quantities
    j_size = np.bincount(pair_p, weights=size_g[pair_g], minlength=m + 1).astype(np.int64)
    j_elsewhere = np.bincount(pair_p, weights=on_pred[pair_g] - overlap, minlength=m + 1).astype(np.int64)
    union_p = j_size + size_p - on_gt - j_elsewhere
    return FrameComponents(
        siou_gt=on_pred[gt_ids] / union_g[gt_ids],
        siou_pred=on_gt[pred_ids] / union_p[pred_ids],
        ppv=on_gt[pred_ids] / size_p[pred_ids],
    )


def component_metrics(siou_gt: np.ndarray, siou_pred: np.ndarray, ppv: np.ndarray) -> dict[str, float]:
    """Dataset-level component metrics from all components' statistics (NaN where undefined)."""
    nan = float("nan")
    out: dict[str, float] = {
        "sIoU_gt": float(np.mean(siou_gt)) if siou_gt.size else nan,
        "sIoU_pred": float(np.mean(siou_pred)) if siou_pred.size else nan,
        "PPV": float(np.mean(ppv)) if ppv.size else nan,
    }
    f1_sum = 0.0
    for t in SIOU_THRESHOLDS:
        tp, fn, fp = int(np.count_nonzero(siou_gt >= t)), int(np.count_nonzero(siou_gt < t)), int(np.count_nonzero(ppv < t))
        f1 = 2 * tp / (2 * tp + fn + fp) if (2 * tp + fn + fp) else nan
        key = f"{round(t * 100):d}"
        out[f"F1_{key}"] = f1
        if key in ("25", "50", "75"):
            out.update({f"TP_{key}": tp, f"FN_{key}": fn, f"FP_{key}": fp})
        f1_sum += f1
    out["mean_F1"] = f1_sum / len(SIOU_THRESHOLDS)
    out["num_gt_components"] = int(siou_gt.size)
    out["num_pred_components"] = int(ppv.size)
    return out


class SmiycComponentMetric(Metric):
    """SMIYC component metrics at a fixed pixel threshold (the pixel curve's ``best_F1_threshold``).

    ``track`` picks the size filter (:data:`COMPONENT_FILTERS`); ``update(scores16, labels)`` as
    :class:`SmiycPixelMetric`. State: sIoU / PPV per component (``cat``, gathered under DDP).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, threshold: float, track: str = "anomaly", **kwargs) -> None:
        super().__init__(**kwargs)
        if track not in COMPONENT_FILTERS:
            raise ValueError(f"track={track!r}: expected one of {sorted(COMPONENT_FILTERS)}")
        self.threshold = float(threshold)
        self.track = track
        self.filter = COMPONENT_FILTERS[track]
        for name in ("siou_gt", "siou_pred", "ppv"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores16=None, labels=None, *, components: FrameComponents | None = None) -> None:
        """Frames as ``(scores16, labels)``, or one frame's component statistics computed elsewhere at this
        metric's threshold and filter (``components=``: the component pass of
        :func:`hazardseg.metrics.benchmark.compute_all`, which shares each frame's ground truth among the scorers)."""
        if components is not None:
            self._append(components)
            return
        for s, y in _frames(scores16, labels):
            truth = FrameGroundTruth.of(y, self.filter)
            self._append(components_of(truth, s.ravel()[truth.roi], self.threshold, self.filter))

    def _append(self, stats: FrameComponents) -> None:
        self.siou_gt.append(torch.from_numpy(stats.siou_gt).to(self.device))
        self.siou_pred.append(torch.from_numpy(stats.siou_pred).to(self.device))
        self.ppv.append(torch.from_numpy(stats.ppv).to(self.device))

    def compute(self) -> dict[str, float]:
        def cat(states: list) -> np.ndarray:
            return dim_zero_cat(states).cpu().numpy() if len(states) else np.zeros(0)

        values = component_metrics(cat(self.siou_gt), cat(self.siou_pred), cat(self.ppv))
        values.update(min_pred_size=self.filter.min_pred_size, min_gt_size=self.filter.min_gt_size)
        return values
