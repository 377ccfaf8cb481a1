"""SMIYC-convention metrics, float16 export and the two-pass evaluator.

The references here are re-derived from the definitions in the test (numpy's quantile/histogram for the bins,
a distinct-threshold curve, per-component boolean masks), not copied from the benchmark's code; the
benchmark's own code was compared separately on exported maps (see the module docstring of
hazardseg.metrics.smiyc).
"""

from __future__ import annotations

import warnings
import zlib

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmark_folders import random_label, smiyc_folder, synthetic_scores
from conftest import SAMPLES
from hazardseg.data import SmiycAnomalyDataModule, SmiycObstacleDataModule
from hazardseg.errors import ConfigError
from hazardseg.metrics import (
    COMPONENT_FILTERS,
    BenchmarkEvaluator,
    Float16Encoder,
    SmiycComponentMetric,
    SmiycPixelMetric,
    read_score_map,
    submission_path,
    upsample_scores,
    write_score_map,
)
from hazardseg.metrics.smiyc import ComponentFilter, _quantiles, frame_bins, frame_components, pixel_metrics
from hazardseg.metrics.submission import F16_LIMIT, collapsed_share

SMIYC = SAMPLES / "smiyc"
needs_samples = pytest.mark.skipif(not SMIYC.is_dir(), reason=f"genuine SMIYC samples not found at {SMIYC}")
F16 = np.float16


# ---------------------------------------------------------------------------------------------
# references written from the definitions
# ---------------------------------------------------------------------------------------------
def ref_bins(scores16: np.ndarray, label: np.ndarray):
    """Per-frame bins with numpy's own quantile and histogram (edges in float64, as numpy 1.23 builds them)."""
    roi = label < 255
    x, y = scores16[roi], label[roi] != 0
    vmin, vmax = float(x.min()), float(x.max())
    eps = max(float(F16(x.max() - x.min())) * 0.01, 0.01)
    edges = [[vmin - eps, vmax + eps]]
    for part in (x[y], x[~y]):
        if part.size:
            edges.append(np.quantile(part, np.linspace(0, 1, min(384, part.size))))
    edges = np.unique(np.concatenate(edges))
    tp, _ = np.histogram(x[y], bins=edges)
    fp, _ = np.histogram(x[~y], bins=edges)
    return edges[:-1][::-1], tp[::-1], fp[::-1], int(y.sum()), int((~y).sum())


def ref_curve(frames: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The pooled curve over distinct thresholds (no tie at the top threshold in the inputs used here)."""
    bins = [ref_bins(s, y) for s, y in frames]
    thr = np.concatenate([b[0] for b in bins])
    tp_rel, fp_rel = np.concatenate([b[1] for b in bins]), np.concatenate([b[2] for b in bins])
    num_pos, num_neg = sum(b[3] for b in bins), sum(b[4] for b in bins)
    taus = np.unique(thr)[::-1]
    tp = np.array([0.0] + [tp_rel[thr >= t].sum() for t in taus])
    fp = np.array([0.0] + [fp_rel[thr >= t].sum() for t in taus])
    taus = np.r_[taus[0] + 1, taus]
    recall, fpr = tp / num_pos, fp / num_neg
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    f1 = 2 * tp / (2 * tp + fp + (num_pos - tp))
    i95 = int(np.argmax(recall >= 0.95))
    return {
        "AP": float(np.sum((recall[1:] - recall[:-1]) * precision[1:])),
        "AUROC": float(np.sum((fpr[1:] - fpr[:-1]) * (recall[1:] + recall[:-1]) / 2)),
        "FPR95": float(fpr[i95]),
        "best_F1": float(f1.max()),
        "best_F1_threshold": float(taus[int(np.argmax(f1))]),
    }


def ref_components(scores16, label, threshold, min_pred, min_gt):
    """Per-component loops with boolean masks, straight from the SMIYC definitions."""
    pred = (scores16 > F16(threshold)) & (label != 255)
    gt_cc, n_gt = ndimage.label(label == 1, structure=np.ones((3, 3)))
    pred_cc, n_pred = ndimage.label(pred, structure=np.ones((3, 3)))
    for k in range(1, n_pred + 1):
        if (pred_cc == k).sum() < min_pred:
            pred_cc[pred_cc == k] = 0
    roi = label != 255
    for i in range(0, n_gt + 1):  # 0: the non-anomaly area (void included), void too if that small
        if (gt_cc == i).sum() < min_gt:
            roi &= gt_cc != i
    g, p = gt_cc[roi], pred_cc[roi]
    siou, ppv = [], []
    for i in np.unique(g[g > 0]):
        ks = np.unique(p[(g == i) & (p > 0)])
        in_k = np.isin(p, ks) & (p > 0)
        inter = np.sum((g == i) & in_k)
        other = np.sum(in_k & (g > 0) & (g != i))
        siou.append(inter / (in_k.sum() + (g == i).sum() - inter - other))
    for k in np.unique(p[p > 0]):
        ppv.append(np.sum((p == k) & (g > 0)) / np.sum(p == k))
    return np.array(siou), np.array(ppv)


def random_frame(rng, height=48, width=64, noise=0.6, blobs=3):
    label = random_label(rng, width, height, blobs=blobs)
    scores = synthetic_scores(label, int(rng.integers(1 << 30)), noise=noise).astype(F16)
    return scores, label


# ---------------------------------------------------------------------------------------------
# pixel convention
# ---------------------------------------------------------------------------------------------
def test_quantiles_equal_numpy_exactly():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 3000))
        with np.errstate(over="ignore"):  # the 2e4 scale overflows to +-inf on purpose
            x = (rng.standard_normal(n) * [1e-3, 1.0, 300.0, 2e4][trial % 4]).astype(F16)
        if trial % 5 == 0:
            x = np.round(x, 1).astype(F16)  # heavy ties
        values, counts = np.unique(x, return_counts=True)
        num = min(384, n)
        want = np.quantile(x, np.linspace(0, 1, num))
        assert np.array_equal(_quantiles(values, counts, num), want, equal_nan=True), trial  # inf - inf: NaN in both


def test_frame_bins_equal_numpy_histogram():
    rng = np.random.default_rng(1)
    for trial in range(40):
        scores, label = random_frame(rng, noise=[0.2, 0.6, 2.0][trial % 3])
        if trial % 7 == 0:
            label[label == 1] = 0  # a frame without anomaly pixels
        got = frame_bins(scores, label)
        want = ref_bins(scores, label)
        assert np.array_equal(got.thresholds, want[0])
        assert np.array_equal(got.tp_rel, want[1]) and np.array_equal(got.fp_rel, want[2])
        assert (got.num_pos, got.num_neg) == want[3:]
        assert got.thresholds.size <= 769  # bounded state: 2 x 384 quantiles + the lower outer edge
        # int64 labels give the same bins
        assert np.array_equal(frame_bins(scores, label.astype(np.int64)).tp_rel, got.tp_rel)


def test_frame_without_roi_adds_nothing():
    assert frame_bins(np.zeros((4, 4), F16), np.full((4, 4), 255, np.uint8)) is None
    metric = SmiycPixelMetric()
    metric.update(np.zeros((4, 4), F16), np.full((4, 4), 255, np.uint8))
    with pytest.raises(ValueError, match="before any labelled frame"):
        metric.compute()


def test_pixel_metric_hand_worked():
    # ROI: 0.1 normal, 0.5 anomaly, 0.3 normal, 0.2 anomaly (+ a void pixel that must not count)
    scores = np.array([[0.1, 0.5, 0.3], [0.2, 0.9, 0.9]], F16)
    label = np.array([[0, 1, 0], [1, 255, 255]], np.uint8)
    metric = SmiycPixelMetric()
    metric.update(scores, label)
    got = metric.compute()
    # thresholds 0.5 | 0.3 | 0.2 | 0.1: (recall, precision) = (.5, 1), (.5, .5), (1, 2/3), (1, .5)
    assert got["AP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-12)
    assert got["AUROC"] == pytest.approx(0.75, abs=1e-12)
    assert got["FPR95"] == pytest.approx(0.5) and got["FPR95_threshold"] == float(F16(0.2))
    assert got["best_F1"] == pytest.approx(0.8) and got["best_F1_threshold"] == float(F16(0.2))
    assert got["num_frames"] == 1


def test_pixel_metric_equals_reference_and_is_order_independent():
    rng = np.random.default_rng(2)
    frames = []
    for k in range(12):
        scores, label = random_frame(rng, noise=0.8)
        scores[-1, -1], label[-1, -1] = F16(100 + k), 0  # a distinct top threshold per frame
        frames.append((scores, label))
    want = ref_curve(frames)
    forward, backward = SmiycPixelMetric(), SmiycPixelMetric()
    for s, y in frames:
        forward.update(s, y)
    for s, y in reversed(frames):
        backward.update(torch.from_numpy(s), torch.from_numpy(y))  # torch inputs too
    got, again = forward.compute(), backward.compute()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
        assert again[key] == pytest.approx(value, abs=1e-12), key


def benchmark_like_ap(frames, first: int) -> float:
    """The benchmark's curve with its extra first point taken from frame ``first`` (one of the frames
    tied at the top threshold): a fixed stand-in for its unstable argsort."""
    bins = [ref_bins(s, y) for s, y in frames]
    thr = np.concatenate([b[0] for b in bins])
    tp_rel, fp_rel = np.concatenate([b[1] for b in bins]), np.concatenate([b[2] for b in bins])
    num_pos = sum(b[3] for b in bins)
    owner = np.concatenate([np.full(len(b[0]), k) for k, b in enumerate(bins)])
    order = np.lexsort((owner != first, -thr))  # descending threshold, frame ``first`` first among ties
    thr, tp, fp = thr[order], np.cumsum(tp_rel[order]), np.cumsum(fp_rel[order])
    keep = np.r_[0, np.nonzero(thr[:-1] != thr[1:])[0], len(thr) - 1]
    tp, fp = np.r_[0, tp[keep]], np.r_[0, fp[keep]]
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    return float(np.sum(np.diff(tp / num_pos) * precision[1:]))


def test_pixel_metric_tied_top_threshold_interval():
    rng = np.random.default_rng(8)
    frames = []
    for _ in range(3):
        scores, label = random_frame(rng, noise=0.8)
        scores[label == 1] = np.minimum(scores[label == 1] + F16(0.5), 1)  # saturated: max 1.0 in every frame
        frames.append((scores.astype(F16), label))
    metric = SmiycPixelMetric()
    for s, y in frames:
        metric.update(s, y)
    got = metric.compute()
    assert got["top_threshold_ties"] == 3
    candidates = [benchmark_like_ap(frames, k) for k in range(3)]
    assert got["AP_tie_min"] == pytest.approx(min(candidates), abs=1e-12)
    assert got["AP_tie_max"] == pytest.approx(max(candidates), abs=1e-12)
    assert max(candidates) - min(candidates) > 1e-4  # the benchmark's own value depends on the frame order
    assert got["AP"] == pytest.approx(ref_curve(frames)["AP"], abs=1e-12)  # fully accumulated points only
    # no tie: no interval keys
    metric = SmiycPixelMetric()
    metric.update(*frames[0])
    assert "AP_tie_min" not in metric.compute()


def test_pixel_metric_batched_update_and_sklearn_closeness():
    rng = np.random.default_rng(3)
    frames = [random_frame(rng, noise=0.5) for _ in range(6)]
    metric = SmiycPixelMetric()
    metric.update(np.stack([s for s, _ in frames]), np.stack([y for _, y in frames]))
    got = metric.compute()
    s = np.concatenate([f[0][f[1] < 255] for f in frames]).astype(np.float64)
    y = np.concatenate([f[1][f[1] < 255] for f in frames])
    # percentile bins approximate the exact curve: close, not equal
    assert abs(got["AP"] - average_precision_score(y, s)) < 0.02
    assert abs(got["AUROC"] - roc_auc_score(y, s)) < 0.01


def test_pixel_metric_rejects_float32_and_nan():
    metric = SmiycPixelMetric()
    with pytest.raises(TypeError, match="float16"):
        metric.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        metric.update(np.array([[np.nan, 0]], F16), np.zeros((1, 2), np.uint8))
    with pytest.raises(ValueError, match="both classes"):
        pixel_metrics(np.array([1.0]), np.array([0]), np.array([3]), 0, 3)


# ---------------------------------------------------------------------------------------------
# components
# ---------------------------------------------------------------------------------------------
NO_FILTER = ComponentFilter(0, 0)


def test_component_partial_detection():
    label = np.zeros((10, 10), np.uint8)
    label[2:6, 2:6] = 1  # 16 px
    scores = np.zeros((10, 10), F16)
    scores[2:4, 2:6] = 1  # predicts 8 of them
    stats = frame_components(scores, label, 0.5, NO_FILTER)
    assert stats.siou_gt.tolist() == [0.5] and stats.ppv.tolist() == [1.0] and stats.siou_pred.tolist() == [0.5]


def test_component_spanning_two_ground_truths():
    label = np.zeros((6, 20), np.uint8)
    label[1:3, 2:7] = 1  # GT A: 10 px
    label[1:3, 10:15] = 1  # GT B: 10 px
    scores = np.zeros((6, 20), F16)
    scores[1:3, 2:15] = 1  # one prediction: both GTs + 6 px between them (26 px)
    scores[1, 1] = 1  # ... + 1 px
    stats = frame_components(scores, label, 0.5, NO_FILTER)
    # sIoU(A) = |A & K| / (|K| + |A| - |A & K| - |K on B|) = 10 / (27 + 10 - 10 - 10)
    assert stats.siou_gt == pytest.approx([10 / 17, 10 / 17])
    assert stats.ppv == pytest.approx([20 / 27])
    # sIoU of the prediction: |K on GT| / (|A| + |B| + |K| - |K on GT| - 0)
    assert stats.siou_pred == pytest.approx([20 / 27])


def test_component_eight_connectivity_threshold_and_void():
    label = np.zeros((8, 8), np.uint8)
    label[1, 1] = label[2, 2] = 1  # diagonal neighbours: ONE ground-truth component
    label[6:8, 6:8] = 255
    scores = np.zeros((8, 8), F16)
    scores[1, 1] = scores[2, 2] = F16(0.75)
    scores[6:8, 6:8] = 1  # on void: never a prediction
    scores[4, 4] = F16(0.5)  # equal to the threshold: not predicted (score > t)
    stats = frame_components(scores, label, 0.5, NO_FILTER)
    assert stats.siou_gt.tolist() == [1.0] and stats.ppv.tolist() == [1.0]
    # the threshold is compared in float16: 0.49996 rounds to 0.5, so 0.5 is still not predicted
    assert frame_components(scores, label, 0.49996, NO_FILTER).ppv.tolist() == [1.0]


def test_component_size_filters():
    label = np.zeros((40, 40), np.uint8)
    label[2:12, 2:12] = 1  # 100 px GT: kept
    label[30:33, 30:33] = 1  # 9 px GT: becomes void for min_gt_size=10
    scores = np.zeros((40, 40), F16)
    scores[2:12, 2:12] = 1  # matches the big GT
    scores[30:33, 30:33] = 1  # on the small GT: its pixels leave the ROI, so the prediction vanishes
    scores[20:22, 20:24] = 1  # 8 px false positive: dropped by min_pred_size=10
    scores[20:24, 30:34] = 1  # 16 px false positive: kept
    stats = frame_components(scores, label, 0.5, ComponentFilter(10, 10))
    assert stats.siou_gt.tolist() == [1.0]
    assert sorted(stats.ppv.tolist()) == [0.0, 1.0]
    stats = frame_components(scores, label, 0.5, NO_FILTER)
    assert stats.siou_gt.tolist() == [1.0, 1.0] and sorted(stats.ppv.tolist()) == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("path", ["as chosen", "pixel list", "masks"])
@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_components_equal_reference(track, path, monkeypatch):
    from hazardseg.metrics import smiyc

    if path != "as chosen":  # both ways of handling the prediction, whatever its size
        monkeypatch.setattr(smiyc, "DENSE_PREDICTION", 1 if path == "pixel list" else 10**9)
    rng = np.random.default_rng(4)
    flt = COMPONENT_FILTERS[track]
    for trial in range(12):
        scores, label = random_frame(rng, height=96, width=128, noise=1.2, blobs=5)
        threshold = float(rng.uniform(0.3, 0.7))
        got = frame_components(scores, label, threshold, flt if trial % 2 else ComponentFilter(flt.min_pred_size // 10, flt.min_gt_size // 10))
        want = ref_components(scores, label, threshold, *(
            (flt.min_pred_size, flt.min_gt_size) if trial % 2 else (flt.min_pred_size // 10, flt.min_gt_size // 10)))
        assert np.allclose(got.siou_gt, want[0], rtol=0, atol=1e-12) and got.siou_gt.size == want[0].size
        assert np.allclose(got.ppv, want[1], rtol=0, atol=1e-12) and got.ppv.size == want[1].size


@pytest.mark.parametrize("path", ["pixel list", "masks"])
def test_components_when_the_non_anomaly_area_becomes_void(path, monkeypatch):
    # A frame that is almost all anomaly: the non-anomaly area is smaller than min_gt_size and becomes void, so
    # predicted pixels off the ground truth no longer count.
    from hazardseg.metrics import smiyc

    monkeypatch.setattr(smiyc, "DENSE_PREDICTION", 1 if path == "pixel list" else 10**9)
    rng = np.random.default_rng(7)
    for trial in range(10):
        label = np.ones((20, 24), np.uint8)
        label[rng.integers(0, 20, 4), rng.integers(0, 24, 4)] = 0  # at most 4 normal pixels
        label[rng.integers(0, 20, 3), rng.integers(0, 24, 3)] = 255
        # odd trials: a normal column splits the GT in two and the normal area (>= 20 px) stays; even: it becomes void
        label[:, 11] = 0 if trial % 2 else 1
        scores = rng.uniform(0, 1, label.shape).astype(F16)
        flt = ComponentFilter(3, 10)
        got = frame_components(scores, label, 0.4, flt)
        want = ref_components(scores, label, 0.4, flt.min_pred_size, flt.min_gt_size)
        assert got.siou_gt.size == want[0].size and np.allclose(got.siou_gt, want[0], rtol=0, atol=1e-12)
        assert got.ppv.size == want[1].size and np.allclose(got.ppv, want[1], rtol=0, atol=1e-12)


def test_component_metric_f1_counts():
    metric = SmiycComponentMetric(0.5, "obstacle")
    # frame 1: a perfect hit; frame 2: a missed GT component and a false positive
    label1 = np.zeros((24, 24), np.uint8)
    label1[2:10, 2:10] = 1  # 64 px: above the obstacle-track filters (50 / 10 px)
    scores1 = np.where(label1 == 1, 1, 0).astype(F16)
    label2 = label1.copy()
    scores2 = np.zeros((24, 24), F16)
    scores2[14:22, 14:22] = 1
    metric.update(scores1, label1)
    metric.update(np.stack([scores2]), np.stack([label2]))
    got = metric.compute()
    assert (got["TP_25"], got["FN_25"], got["FP_25"]) == (1, 1, 1)
    assert got["F1_25"] == got["F1_75"] == got["mean_F1"] == pytest.approx(0.5)
    assert got["sIoU_gt"] == pytest.approx(0.5) and got["PPV"] == pytest.approx(0.5)
    assert (got["num_gt_components"], got["num_pred_components"]) == (2, 2)
    assert (got["min_pred_size"], got["min_gt_size"]) == (50, 10)
    assert [k for k in got if k.startswith("F1_")] == [f"F1_{t}" for t in range(25, 80, 5)]


def test_component_metric_without_components():
    got = SmiycComponentMetric(0.5).compute()
    assert np.isnan(got["sIoU_gt"]) and np.isnan(got["mean_F1"]) and got["num_gt_components"] == 0


# ---------------------------------------------------------------------------------------------
# float16 export
# ---------------------------------------------------------------------------------------------
def test_encoder_keeps_benign_maps_as_they_are():
    scores = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    encoder = Float16Encoder()
    assert np.array_equal(encoder.encode(scores), scores.astype(F16))
    assert (encoder.offset, encoder.scale) == (0.0, 1.0)


def test_encoder_rescales_collapsing_maps_monotonically():
    label = random_label(np.random.default_rng(6), 128, 64)
    msp = synthetic_scores(label, 1, kind="msp")  # -max softmax: normal pixels at -0.99999x
    assert collapsed_share(msp) > 0.05
    encoder = Float16Encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fitted on this frame: no collapse warning
        encoded = encoder.encode(msp)
    assert encoder.offset == float(msp.min()) and np.log2(encoder.scale).is_integer()
    assert collapsed_share(encoded.astype(np.float32)) <= 0.05
    order = np.argsort(msp.ravel(), kind="stable")
    assert np.all(np.diff(encoded.ravel()[order].astype(np.float64)) >= 0)  # monotone
    assert len(np.unique(encoded)) > 5 * len(np.unique(msp.astype(F16)))
    assert encoder.decode(float(encoded.max())) == pytest.approx(float(msp.max()), abs=1e-3)


def _numpy_encoding(x: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """The float16 map as numpy computes it: ``(x - offset) * scale`` in x's dtype, clipped, rounded to float16."""
    y = x - x.dtype.type(offset) if offset else x
    y = y * x.dtype.type(scale) if scale != 1.0 else y
    return np.clip(y, -F16_LIMIT, F16_LIMIT).astype(F16)


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (-3.25, 1.0), (0.7, 256.0), (-0.999, 2.0**20), (5.0, 2.0**-3)])
def test_encoder_gives_numpys_float16_bits(offset, scale):
    """The encoder's (torch) arithmetic and float16 rounding equal numpy's bit for bit: random float32 bit patterns
    (every exponent, subnormals, +-inf), every float16 midpoint and its float32 neighbours, values near the clip
    limit; float64 maps too."""
    rng = np.random.default_rng(int(scale * 7) % 1000)
    bits = rng.integers(0, 2**32, 2**20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[~np.isnan(bits)]
    halves = np.arange(2**16, dtype=np.uint16).view(F16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    mids = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)  # exact midpoints (ties)
    near = np.concatenate([np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))])
    edge = np.float32(F16_LIMIT) + np.arange(-40, 40, dtype=np.float32) * np.float32(0.5)
    for values in (bits, mids, near, edge, np.concatenate([edge, -edge])):
        for x in (values, values.astype(np.float64)):
            x = (x / x.dtype.type(scale) + x.dtype.type(offset)) if values is not bits else x
            encoder = Float16Encoder(offset=offset, scale=scale)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # clipping / collapse notes
                got = encoder.encode(x.reshape(1, -1))
            assert np.array_equal(got.view(np.uint16), _numpy_encoding(x.reshape(1, -1), offset, scale).view(np.uint16))


def test_encoder_overflow_inf_nan_and_collapse_warnings():
    encoder = Float16Encoder()
    encoder.encode(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10))  # fits identity
    with pytest.warns(UserWarning, match="clipped"):
        out = encoder.encode(np.array([[1e6, -np.inf, 0.5]], np.float32))
    assert out.tolist() == [[F16_LIMIT, -F16_LIMIT, 0.5]] and encoder.clipped_pixels == 2
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode(np.array([[np.nan]], np.float32))
    with pytest.warns(UserWarning, match="merges distinct scores"):
        encoder.encode(1 - np.linspace(0, 1e-5, 100, dtype=np.float32).reshape(10, 10))
    report = encoder.report()
    assert report["f16_clipped_pixels"] == 2 and report["f16_collapsed_frames"] == 1 and report["f16_frames"] == 3


def test_encoder_overflowing_first_frame_is_rescaled():
    scores = np.linspace(-1e6, 3e6, 1000, dtype=np.float32).reshape(10, 100)
    encoder = Float16Encoder()
    out = encoder.encode(scores)
    assert np.isfinite(out).all() and 2**11 < float(out.max()) <= 2**12 and encoder.clipped_pixels == 0
    assert encoder.state_dict() == {"rescale": "auto", "offset": -1e6, "scale": encoder.scale}
    other = Float16Encoder()
    other.load_state_dict(encoder.state_dict())
    assert np.array_equal(other.encode(scores), out)


def test_encoder_options():
    assert Float16Encoder("none").encode(np.array([[1 - 1e-6]], np.float32)).tolist() == [[1.0]]
    fixed = Float16Encoder(offset=1.0, scale=2.0)
    assert fixed.encode(np.array([[3.0]], np.float32)).tolist() == [[4.0]]
    for kwargs in ({"rescale": "log"}, {"offset": 1.0}, {"offset": 0.0, "scale": -1.0}):
        with pytest.raises(ConfigError):
            Float16Encoder(**kwargs)


def test_submission_file_roundtrip(tmp_path):
    value = (np.random.default_rng(7).random((24, 40)) * 100).astype(F16)
    path = submission_path(tmp_path, "m", "AnomalyTrack-all", "validation0000")
    assert path == tmp_path / "anomaly_p/m/AnomalyTrack-all/validation0000.hdf5"
    for compress in (True, False):
        write_score_map(path, value, compress=compress)
        with h5py.File(path, "r") as f:  # what the benchmark's ChannelLoaderHDF5 reads
            assert f["value"].dtype == np.float16 and list(f.keys()) == ["value"]
        assert np.array_equal(read_score_map(path), value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["validation0000.hdf5"]  # no temporary left
    with pytest.raises(ConfigError):
        submission_path(tmp_path, "m", "../x", "f")
    with pytest.raises(ValueError, match="float16"):
        write_score_map(path, value.astype(np.float32))


def test_upsample_scores_bilinear_half_pixel():
    low = torch.tensor([[0.0, 1.0]])
    up = upsample_scores(low, (1, 4))
    assert up.tolist() == [[0.0, 0.25, 0.75, 1.0]]
    assert upsample_scores(torch.ones(2, 3, 5), (3, 5)).shape == (2, 3, 5)


# ---------------------------------------------------------------------------------------------
# two-pass evaluator
# ---------------------------------------------------------------------------------------------
def _frames(dm):
    dm.setup("test")
    for batch in dm.test_dataloader():
        yield batch["name"][0], batch["group"][0], batch["mask"][0], bool(batch["has_label"][0])


@needs_samples
def test_evaluator_on_genuine_obstacle_frames(tmp_path):
    dm = SmiycObstacleDataModule(root=SMIYC / "dataset_ObstacleTrack", num_workers=0)
    evaluator = BenchmarkEvaluator(tmp_path, "noisy", track="obstacle", submission=True)
    maps, labels, raw = [], [], []
    for fid, group, mask, has_label in _frames(dm):
        scores = torch.from_numpy(synthetic_scores(mask.numpy(), zlib.crc32(fid.encode()), noise=0.8))
        evaluator.add(fid, group, scores, mask)
        maps.append(read_score_map(submission_path(tmp_path, "noisy", "ObstacleTrack-all", fid)))
        labels.append(mask.numpy().astype(np.uint8))
        raw.append(scores.numpy())
    got = evaluator.compute()
    # every number comes from exactly the exported float16 maps
    pixel = SmiycPixelMetric()
    for m, y in zip(maps, labels):
        pixel.update(m, y)
    want = pixel.compute()
    components = SmiycComponentMetric(want["best_F1_threshold"], "obstacle")
    for m, y in zip(maps, labels):
        components.update(m, y)
    want.update(components.compute())
    for key in ("AP", "AUROC", "FPR95", "best_F1", "best_F1_threshold", "sIoU_gt", "PPV", "mean_F1", "F1_50"):
        assert got[key] == want[key], key
    assert got["component_threshold"] == got["best_F1_threshold"] and got["num_scored_frames"] == 2
    # pooled convention: sklearn on the float32 scores, void excluded
    s = np.concatenate([r[y < 255] for r, y in zip(raw, labels)])
    y = np.concatenate([y[y < 255] for y in labels])
    assert got["pooled_AUPR"] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    assert got["pooled_AUROC"] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert 0 < got["AP"] <= 1 and got["f16_frames"] == 2


def test_evaluator_unlabelled_frames_scratch_and_groups(tmp_path):
    root = smiyc_folder(tmp_path / "dataset_AnomalyTrack", [("cow0000", (64, 32), False),
                                                              ("validation0000", (64, 32), True),
                                                              ("validation0001", (40, 24), True)])
    dm = SmiycAnomalyDataModule(root=root, num_workers=0)
    run = tmp_path / "run"
    evaluator = BenchmarkEvaluator(run, "m", submission=False, pooled=False)
    for fid, group, mask, has_label in _frames(dm):
        scores = synthetic_scores(mask.numpy().astype(np.uint8), 0, noise=0.5)
        assert evaluator.add(fid, group, torch.from_numpy(scores), mask if has_label else None) is None
    scratch = sorted(run.glob(".smiyc-maps-*/*.npy"))
    assert len(scratch) == 2  # only the labelled frames are kept for the component pass, their ROI only
    roi_pixels = [int((m != 255).sum()) for *_, m, has in _frames(dm) if has]
    assert [np.load(p).shape for p in scratch] == [(n,) for n in roi_pixels]
    got = evaluator.compute()
    assert got["num_frames"] == 3 and got["num_scored_frames"] == 2 and "pooled_AUPR" not in got
    assert not list(run.glob(".smiyc-maps-*")) and not (run / "anomaly_p").exists()
    # submission=True: every frame gets its file, labelled or not
    evaluator = BenchmarkEvaluator(run, "m", submission=True, pooled=False)
    for fid, group, mask, has_label in _frames(dm):
        evaluator.add(fid, group, torch.rand(mask.shape), mask if has_label else None)
    assert sorted(p.name for p in (run / "anomaly_p/m/AnomalyTrack-all").iterdir()) == [
        "cow0000.hdf5", "validation0000.hdf5", "validation0001.hdf5"]
    assert set(evaluator.compute()) >= {"AP", "sIoU_gt", "mean_F1"}


def test_evaluator_without_labels_or_anomalies(tmp_path):
    evaluator = BenchmarkEvaluator(tmp_path, "m", submission=True, pooled=False)
    evaluator.add("test0001", "AnomalyTrack-all", torch.rand(8, 8), None)
    got = evaluator.compute()
    assert got["num_scored_frames"] == 0 and "private" in got["note"] and "AP" not in got
    evaluator = BenchmarkEvaluator(tmp_path, "m", pooled=False)
    evaluator.add("f", "AnomalyTrack-all", torch.rand(8, 8), torch.zeros(8, 8, dtype=torch.long))
    assert "no anomaly pixels" in evaluator.compute()["note"]
    with pytest.raises(ValueError, match="upsample"):
        evaluator.add("f", "AnomalyTrack-all", torch.rand(4, 4), torch.zeros(8, 8, dtype=torch.long))


def _same(a: dict, b: dict) -> bool:
    """Every value equal, NaN (no component at that threshold) equal to NaN."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and np.isnan(a[k]) and np.isnan(b[k])) for k in a)


def test_compute_all_shares_frames_and_equals_each_evaluator_alone(tmp_path):
    # Several scorers on one dataset (what BenchmarkEvaluation does): one label store, one component pass frame by
    # frame. Every number must be each evaluator's own compute(), and the run must not warn.
    from hazardseg.metrics.benchmark import LabelledFrames, as_uint8_label, compute_all

    rng = np.random.default_rng(21)
    frames = [(random_label(rng, 160, 96, blobs=3), i) for i in range(5)]
    kinds = ["prob", "logit", "saturated"]
    store = LabelledFrames()
    shared = [BenchmarkEvaluator(tmp_path / "a", f"s{j}", "obstacle", pooled=True, frames=store) for j in range(3)]
    alone = [BenchmarkEvaluator(tmp_path / "b", f"s{j}", "obstacle", pooled=True) for j in range(3)]
    for label, i in frames:
        index = store.add(as_uint8_label(label))
        for j, (a, b) in enumerate(zip(shared, alone)):
            scores = torch.from_numpy(synthetic_scores(label, 10 * i + j, noise=0.5, kind=kinds[j]))
            a.add(f"f{i}", "ObstacleTrack-all", scores, label, index)
            b.add(f"f{i}", "ObstacleTrack-all", scores, torch.from_numpy(label))
    assert len(store._blobs) == len(frames)  # one label per frame, not one per scorer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torchmetrics' "compute before update"
        together = compute_all(shared)
    for got, ev in zip(together, alone):
        want = ev.compute()
        assert want["num_gt_components"] > 0 and _same(got, want)
    assert not any((tmp_path / "a").glob(".smiyc-maps-*"))  # scratch maps removed


def test_above_compares_float16_scores_as_numpy_does() -> None:
    from hazardseg.metrics.smiyc import above

    rng = np.random.default_rng(0)
    special = np.array([0, -0.0, np.inf, -np.inf, 65504, -65504, 6e-8, -6e-8], np.float16)
    values = np.concatenate([rng.standard_normal(20000).astype(np.float16), special,
                             (rng.standard_normal(1000) * 1e-6).astype(np.float16)])
    for threshold in [*rng.standard_normal(50), 0.0, -0.0, np.inf, -np.inf, 1e-7, -1e-7, 7e4, -7e4, 65504.0]:
        with np.errstate(over="ignore"):
            want = values > np.float16(threshold)
        assert np.array_equal(above(values, threshold), want), threshold


def test_parallel_component_pass_equals_one_thread(monkeypatch, tmp_path) -> None:
    """compute_all's component pass in worker threads appends every frame's statistics in the order one thread
    does: the same numbers to the last digit."""
    from hazardseg.metrics import benchmark

    def evaluate(workers: int) -> list[dict]:
        monkeypatch.setattr(benchmark, "component_workers", lambda: workers)
        frames = benchmark.LabelledFrames()
        rng = np.random.default_rng(3)
        evaluators = [benchmark.BenchmarkEvaluator(tmp_path / f"w{workers}", f"m{k}", track="obstacle", frames=frames)
                      for k in range(3)]
        for f in range(7):
            label = random_label(rng, 160, 96, blobs=4)
            for k, ev in enumerate(evaluators):
                noise = ndimage.uniform_filter(rng.standard_normal(label.shape), 3).astype(np.float32)
                ev.add(f"frame{f}", "", torch.from_numpy(noise + (label == 1) * 0.3 * (k + 1)), torch.from_numpy(label))
        return benchmark.compute_all(evaluators)

    one, two = evaluate(1), evaluate(2)
    assert len(one) == 3 and sum(r["num_pred_components"] for r in one) > 20, [r["num_pred_components"] for r in one]
    assert repr(one) == repr(two)  # every number, NaN included, to the last digit
