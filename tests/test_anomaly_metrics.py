"""AnomalyMetrics / PerImageAnomalyMetrics against sklearn and a numpy FPR95 reference."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hazardseg.metrics import AnomalyMetrics, PerImageAnomalyMetrics
from hazardseg.metrics import anomaly
from hazardseg.metrics.anomaly import NUM_BINS, bin_index, bin_of, histogram
from hazardseg.scorers import MSP, Energy, Entropy, MaxLogit

TOL = 1e-4  # documented binning error budget for realistic (untied) scores
EXACT = 1e-12  # float rounding only: exactly tied data must agree


def fpr95_reference(y_true: np.ndarray, y_score: np.ndarray, appended_recall: float = 1.0) -> float:
    """Hendrycks' ``fpr_and_fdr_at_recall`` (anomaly-seg), plain numpy.

    The original appends the point (recall 1, fps 0); the task brief describes (recall 0,
    fps 0). Neither can be selected (index 0 already has recall exactly 1 and wins ties),
    ``test_reference_endpoint_is_irrelevant`` checks that.
    """
    y_true = np.asarray(y_true, dtype=bool)
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.int64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], appended_recall], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - 0.95))
    return fps[cutoff] / np.sum(~y_true)


def reference(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    s, y = scores.double().numpy().ravel(), labels.numpy().ravel()
    s = np.clip(s, -3e38, 3e38)  # sklearn rejects inf; this keeps the ranking
    return {
        "aupr": average_precision_score(y, s),
        "auroc": roc_auc_score(y, s),
        "fpr95": fpr95_reference(y, s),
    }


def pooled(scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    metric = AnomalyMetrics()
    metric.update(scores, labels, valid)
    return metric.compute()


def assert_close(got: dict, want: dict, tol: float) -> None:
    for key in ("aupr", "auroc", "fpr95"):
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])


def logits(n: int, classes: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(n, classes, generator=gen) * scale


def realistic(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Score maps as produced by common scorers; anomalies are less confident."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=gen) < 0.01
    scale = torch.where(y, 2.0, 5.0)[:, None]  # anomalies: flatter logits
    lg = logits(n, 19, 1.0, gen) * scale
    if kind == "gauss":
        s = torch.randn(n, generator=gen) + 1.5 * y
    elif kind == "gauss_mix":
        comp = torch.rand(n, generator=gen) < 0.3
        s = torch.randn(n, generator=gen) * torch.where(comp, 0.2, 3.0) + 2.0 * y + 10.0 * comp
    elif kind == "msp":
        s = -lg.softmax(1).amax(1)
    elif kind == "msp_confident":  # trained-net-like: almost all values within 1e-3 of -1
        s = -(lg * 2).softmax(1).amax(1)
    elif kind == "max_logit":
        s = -lg.amax(1)
    elif kind == "entropy":
        p = lg.softmax(1)
        s = -(p * p.clamp_min(1e-30).log()).sum(1)
    elif kind == "energy":
        s = -torch.logsumexp(lg, 1)
    else:
        raise AssertionError(kind)
    return s.float(), y


def confident_logits(normal: int, anomalies: int, seed: int = 0, classes: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits ``(n, C)`` of a simulated well-trained segmenter, and the anomaly labels.

    Normal pixels have ``1 - max softmax`` log-normal around 8e-7 (99.7% within 1e-9..1e-4),
    anomalies are 55x less confident; the max logit grows with the confidence (plus noise) and
    the other classes share the rest of the mass unevenly; the argmax class is random. The
    ``anomalies`` anomaly pixels come last, so ``[:normal + k]`` keeps the first k of them.
    """
    gen = torch.Generator().manual_seed(seed)
    n = normal + anomalies
    is_anomaly = torch.arange(n) >= normal
    log_eps = torch.randn(n, generator=gen) * (0.8 * math.log(10)) + math.log(8e-7)
    log_eps = (log_eps + is_anomaly * math.log(55)).clamp(max=math.log(0.5))  # eps = 1 - max softmax
    top = 4 - 0.5 * log_eps + torch.randn(n, generator=gen)
    argmax = torch.randint(classes, (n, 1), generator=gen)
    others = (torch.randn(n, classes, generator=gen) * 2).scatter_(1, argmax, -math.inf)
    # scale the other classes so that sum_j e^(l_j - top) = eps / (1 - eps)
    target = top + log_eps - torch.log1p(-log_eps.exp())
    others += (target - others.logsumexp(1))[:, None]
    return others.scatter_(1, argmax, top[:, None]), is_anomaly


def paper_scores_float64(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The papers' definitions, in float64: -max softmax, -max logit, entropy, energy (T=1)."""
    lg = logits.double()
    lse = lg.logsumexp(1, keepdim=True)
    log_p = lg - lse  # log_softmax
    p = log_p.exp()
    return {
        "msp": -p.amax(1),
        "maxlogit": -lg.amax(1),
        "entropy": -(p * log_p).sum(1),
        "energy": -lse.squeeze(1),
    }


SCORERS = {"msp": MSP(), "maxlogit": MaxLogit(), "entropy": Entropy(), "energy": Energy()}
CONFIDENT_NORMAL, CONFIDENT_ANOMALIES = 1_000_000, 10_102  # 1e-2 prevalence needs 10,102 anomalies


@functools.lru_cache(maxsize=1)
def confident_model() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(our float32 maps, float64 paper scores, their descending order, labels) of one simulated model."""
    logits, labels = confident_logits(CONFIDENT_NORMAL, CONFIDENT_ANOMALIES, seed=21)
    as_image = logits.T.contiguous().view(1, logits.shape[1], -1, 1)  # (N, C, H, W) for the scorers
    maps = {name: scorer(as_image).view(-1) for name, scorer in SCORERS.items()}
    exact = paper_scores_float64(logits)
    # sklearn's metrics do not depend on the input order; pre-sorted input makes its sorts ~free
    order = {name: torch.argsort(score, descending=True, stable=True) for name, score in exact.items()}
    return maps, exact, order, labels


@pytest.mark.parametrize("prevalence", [1e-2, 1e-3, 1e-4, 1e-5])
def test_confident_model_matches_float64_reference(prevalence: float) -> None:
    """Pooled metrics of all four scorers' float32 maps vs sklearn/official on float64 paper scores."""
    maps, exact, order, labels = confident_model()
    n = CONFIDENT_NORMAL + round(prevalence * CONFIDENT_NORMAL / (1 - prevalence))
    assert int(labels[:n].sum()) >= 10
    for name in SCORERS:
        got = pooled(maps[name][:n], labels[:n])
        keep = order[name][order[name] < n]  # the first n pixels, in descending exact score
        want = reference(exact[name][keep], labels[keep])
        for key in ("aupr", "auroc", "fpr95"):
            assert abs(got[key] - want[key]) <= TOL, (name, key, got[key], want[key])


def test_error_bounds_expose_collapsed_max_softmax() -> None:
    # -max softmax of a confident model in float32: most pixels are exactly -1.0 (tied with
    # anomalies that are confident too). The data-dependent bound must show it.
    logits, labels = confident_logits(200_000, 2_000, seed=22)
    metric = AnomalyMetrics()
    metric.update(-logits.softmax(1).amax(1), labels)
    assert metric.error_bounds()["auroc"] > 1e-3
    fixed = AnomalyMetrics()
    fixed.update(MSP()(logits.T.contiguous().view(1, logits.shape[1], -1, 1)).view(-1), labels)
    assert fixed.error_bounds()["auroc"] < 1e-5


@pytest.mark.parametrize(
    "kind", ["gauss", "gauss_mix", "msp", "msp_confident", "max_logit", "entropy", "energy"]
)
def test_realistic_scores_within_tolerance(kind: str) -> None:
    scores, labels = realistic(kind, 400_000, seed=1)
    got = pooled(scores, labels)
    want = reference(scores, labels)
    assert_close(got, want, TOL)
    # the data-dependent bounds hold and are meaningful (below the budget)
    metric = AnomalyMetrics()
    metric.update(scores, labels)
    bounds = metric.error_bounds()
    for key in ("aupr", "auroc", "fpr95"):
        assert abs(got[key] - want[key]) <= bounds[key] + EXACT, key
    assert bounds["auroc"] < TOL


def test_large_msp_within_tolerance() -> None:
    scores, labels = realistic("msp_confident", 3_000_000, seed=2)
    assert_close(pooled(scores, labels), reference(scores, labels), TOL)


@pytest.mark.parametrize("decimals", [0, 1, 2])
def test_heavily_tied_scores_agree_exactly(decimals: int) -> None:
    gen = torch.Generator().manual_seed(3)
    labels = torch.rand(200_000, generator=gen) < 0.05
    scores = (torch.randn(200_000, generator=gen) + labels).round(decimals=decimals)
    assert_close(pooled(scores, labels), reference(scores, labels), EXACT)


def test_ties_straddling_zero_and_negative_zero() -> None:
    gen = torch.Generator().manual_seed(4)
    labels = torch.rand(10_000, generator=gen) < 0.2
    scores = torch.randint(-3, 4, (10_000,), generator=gen).float() * 0.5
    scores[::7] = -0.0  # -0.0 == 0.0 must tie with +0.0
    got = pooled(scores, labels)
    assert_close(got, reference(scores, labels), EXACT)


def test_constant_scores() -> None:
    labels = torch.zeros(1000, dtype=torch.bool)
    labels[:37] = True
    got = pooled(torch.full((1000,), 0.25), labels)
    assert got["auroc"] == pytest.approx(0.5, abs=EXACT)
    assert got["aupr"] == pytest.approx(0.037, abs=EXACT)
    assert got["fpr95"] == 1.0
    assert_close(got, reference(torch.full((1000,), 0.25), labels), EXACT)


def test_extremely_imbalanced() -> None:
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(100_000, generator=gen)
    labels = torch.zeros(100_000, dtype=torch.bool)
    labels[[10, 20_000, 99_999]] = True
    scores[labels] += 2.5
    assert_close(pooled(scores, labels), reference(scores, labels), EXACT)


@pytest.mark.parametrize(
    "scores,labels",
    [
        ([0.1, 0.9], [0, 1]),
        ([0.9, 0.1], [0, 1]),
        ([0.5, 0.5, 0.2], [1, 0, 0]),
        ([0.3, -0.2, 0.8, 0.8, 0.1], [1, 0, 1, 0, 0]),
        ([-1.0, -2.0, -3.0, -4.0], [0, 1, 0, 1]),
    ],
)
def test_tiny_inputs(scores: list[float], labels: list[int]) -> None:
    s, y = torch.tensor(scores), torch.tensor(labels, dtype=torch.bool)
    assert_close(pooled(s, y), reference(s, y), EXACT)


def test_infinite_scores_sort_to_the_ends() -> None:
    gen = torch.Generator().manual_seed(6)
    labels = torch.rand(50_000, generator=gen) < 0.1
    scores = (torch.randn(50_000, generator=gen) + labels).round(decimals=2)
    scores[:500] = float("inf")
    scores[500:900] = -float("inf")
    assert_close(pooled(scores, labels), reference(scores, labels), EXACT)


def test_fpr95_reference_endpoint_is_irrelevant() -> None:
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        y = (torch.rand(50, generator=gen) < 0.3).numpy()
        y[0], y[1] = True, False
        s = torch.randint(0, 5, (50,), generator=gen).double().numpy()
        assert fpr95_reference(y, s, 1.0) == fpr95_reference(y, s, 0.0)


def test_fpr95_tie_goes_to_higher_recall() -> None:
    # 50 anomalies: recall 0.94 and 0.96 are exactly equally far from 0.95 in float64.
    scores = torch.tensor([10.0] * 47 + [6.0, 5.0, 4.0, 3.0, 3.0, 1.0])
    labels = torch.tensor([1] * 47 + [0, 1, 0, 1, 1, 0], dtype=torch.bool)
    # curve (recall, fps): (.94,0) (.94,1) (.96,1) (.96,2) (1,2) (1,3); the reference scans
    # from (1,2) upwards and takes the first minimum -> (.96, 2) -> 2 of 3 normal pixels.
    assert abs(0.94 - 0.95) == abs(0.96 - 0.95)
    assert fpr95_reference(labels.numpy(), scores.numpy()) == pytest.approx(2 / 3)
    assert pooled(scores, labels)["fpr95"] == pytest.approx(2 / 3, abs=EXACT)


@pytest.mark.parametrize("tied", [False, True])
def test_fpr95_crossing_inside_one_bin(tied: bool) -> None:
    # 52 anomalies: 0.95 * 52 = 49.4, so recall count 49 is the target. Anomalies 49 and 50 share a
    # bin (1.5 and 1.5 + 2**-22, 4 float32 steps apart); 1000 normals separate anomaly 50 from 51.
    high = torch.arange(48, dtype=torch.float32) + 10.0
    pair = torch.tensor([1.5, 1.5 if tied else 1.5 + 2.0**-22])
    normals = torch.cat([torch.linspace(100.0, 200.0, 100), torch.linspace(0.5, 1.4, 1000), torch.linspace(-5.0, -1.0, 900)])
    scores = torch.cat([high, pair, torch.tensor([0.0, -0.5]), normals])
    labels = torch.zeros(scores.numel(), dtype=torch.bool)
    labels[:52] = True
    assert bin_of(float(pair[0])) == bin_of(float(pair[1]))
    want = fpr95_reference(labels.numpy(), scores.double().numpy())
    # distinct: count 49 is on the curve, the cutoff sits above anomaly 50: the 100 top normals.
    # tied: counts 48 and 50 are on the curve, 50 is nearer: cutoff above anomaly 51, 1100 normals.
    # (Treating the distinct pair as tied, as a plain histogram does, would give 1100 there too.)
    assert want == (1100 if tied else 100) / 2000
    metric = AnomalyMetrics()
    metric.update(scores, labels)
    assert metric.compute()["fpr95"] == pytest.approx(want, abs=EXACT)
    assert metric.error_bounds()["fpr95"] == 0.0  # the cutoff's bin holds no normal pixel either way


def pooled_state(metric: AnomalyMetrics, name: str) -> torch.Tensor:
    """A state as the dense histogram it stands for, lanes summed (how pixels are shared among lanes depends on
    the batches, and where a block sits in the pool on the order it was first reached): ``counts`` (2, NUM_BINS),
    ``low_min`` / ``low_max`` (NUM_BINS,) of the anomaly pixels; ``offsets`` as "which blocks have storage"."""
    if name in ("pixels", "nan_pixels"):
        return getattr(metric, name)
    if name == "offsets":
        return metric.offsets >= 0
    rows = metric.offsets.view(2, -1)
    if name == "counts":
        pool, fill, classes = metric.counts.sum(0), 0, (0, 1)
    else:
        pool, fill, classes = getattr(metric, name), (255 if name == "low_min" else 0), (1,)
    dense = torch.full((len(classes), rows.shape[1], anomaly.BLOCK), fill, dtype=pool.dtype)
    for i, c in enumerate(classes):
        have = torch.nonzero(rows[c] >= 0).ravel()
        dense[i, have] = pool.view(-1, anomaly.BLOCK)[rows[c, have] // anomaly.BLOCK]
    dense = dense.view(len(classes), -1)[:, : anomaly.NUM_BINS]
    return dense if name == "counts" else dense[0]


@pytest.fixture
def histogram_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pixel straight into the histogram: for the tests that look at its blocks (small evaluations on the
    CPU otherwise keep their pixels as they are, SORT_BELOW_PIXELS)."""
    monkeypatch.setattr(anomaly, "SORT_BELOW_PIXELS", 0)


def test_construction_is_free_and_state_grows_with_what_was_seen(histogram_only) -> None:
    metric = AnomalyMetrics()
    assert metric.counts.numel() == 0 and metric.state_bytes() < 2**20  # the block table only
    metric.update(torch.full((1000,), 0.5), torch.zeros(1000, dtype=torch.bool))
    assert int((metric.offsets >= 0).sum()) == 1  # one block for one distinct score
    scores, labels = realistic("gauss_mix", 200_000, seed=3)
    metric.update(scores, labels)
    assert metric.state_bytes() < 64 * 2**20  # the dense layout held 142 MiB whatever was seen
    assert metric.compute() == pooled(torch.cat([torch.full((1000,), 0.5), scores]),
                                      torch.cat([torch.zeros(1000, dtype=torch.bool), labels]))


def test_streaming_equals_single_update() -> None:
    scores, labels = realistic("msp", 200_000, seed=8)
    one = AnomalyMetrics()
    one.update(scores, labels)
    many = AnomalyMetrics()
    for chunk_s, chunk_y in zip(scores.split(7_919), labels.split(7_919)):
        many.update(chunk_s, chunk_y)
    assert torch.equal(pooled_state(one, "counts"), pooled_state(many, "counts"))
    assert one.compute() == many.compute()


def test_ddp_style_merge_equals_single_object(histogram_only) -> None:
    scores, labels = realistic("gauss_mix", 100_000, seed=9)
    full, a, b = AnomalyMetrics(), AnomalyMetrics(), AnomalyMetrics()
    full.update(scores, labels)
    a.update(scores[:50_000], labels[:50_000])
    b.update(scores[50_000:], labels[50_000:])
    # what DDP's sync does: agree on the union of blocks (the ranks' pools differ), gather every state,
    # reduce with its dist_reduce_fx (sum / min / max)
    assert a.counts.shape != b.counts.shape
    union = (a.offsets >= 0) | (b.offsets >= 0)
    a._canonical(union)
    b._canonical(union)
    summed = AnomalyMetrics()
    for name, reduce in summed._reductions.items():
        setattr(summed, name, reduce(torch.stack([getattr(a, name), getattr(b, name)])))
        assert torch.equal(pooled_state(summed, name), pooled_state(full, name)), name
    summed._update_count = 1
    assert summed.compute() == full.compute()
    a.merge_state(b)
    assert a.compute() == full.compute()


def test_large_evaluations_switch_to_the_dense_layout(monkeypatch: pytest.MonkeyPatch, histogram_only) -> None:
    monkeypatch.setattr(anomaly, "DENSE_AFTER_PIXELS", 50_000)  # as if 5e7 pixels had been fed
    scores, labels = realistic("entropy", 200_000, seed=13)
    metric = AnomalyMetrics()
    for chunk_s, chunk_y in zip(scores.split(40_000), labels.split(40_000)):
        metric.update(chunk_s, chunk_y)
    assert metric._is_dense() and metric.counts.shape[1] == anomaly.NUM_BLOCKS * anomaly.BLOCK
    assert metric.compute() == pooled(scores, labels)


def test_update_under_inference_mode() -> None:
    # Lightning's test loop runs in inference mode: the block table then has no version counter
    scores, labels = realistic("msp", 50_000, seed=14)
    with torch.inference_mode():
        metric = AnomalyMetrics()
        for chunk_s, chunk_y in zip(scores.split(10_000), labels.split(10_000)):
            metric.update(chunk_s, chunk_y)
        assert metric.compute() == pooled(scores, labels)


def test_forward_merges_batch_states_of_other_layouts() -> None:
    # Metric.forward reduces the batch state into the accumulated one (_reduce_states): their pools differ
    scores, labels = realistic("energy", 60_000, seed=12)
    metric = AnomalyMetrics()
    metric(scores[:30_000], labels[:30_000])
    metric(scores[30_000:] * 3.0 - 7.0, labels[30_000:])  # other blocks
    want = pooled(torch.cat([scores[:30_000], scores[30_000:] * 3.0 - 7.0]), labels)
    assert metric.compute() == want


def test_valid_mask_drops_pixels() -> None:
    scores, labels = realistic("entropy", 50_000, seed=10)
    valid = torch.rand(50_000, generator=torch.Generator().manual_seed(11)) < 0.7
    garbage = scores.clone()
    ignored = scores[~valid]
    # ignored pixels may hold anything: NaN, or values that would change counts and tie flags
    garbage[~valid] = torch.where(torch.arange(ignored.numel()) % 2 == 0, float("nan"), ignored.flip(0) * 1.0001)
    masked, kept = AnomalyMetrics(), AnomalyMetrics()
    masked.update(garbage, labels, valid)
    kept.update(scores[valid], labels[valid])
    for name in masked._defaults:  # every state, the tie flags included
        assert torch.equal(pooled_state(masked, name), pooled_state(kept, name)), name
    got = masked.compute()
    assert got == kept.compute()
    assert_close(got, reference(scores[valid], labels[valid]), TOL)
    assert got != pooled(scores, labels)


def test_shapes_and_dtypes() -> None:
    scores, labels = realistic("gauss", 4 * 32 * 32, seed=12)
    flat = pooled(scores, labels)
    assert pooled(scores.view(4, 32, 32), labels.view(4, 32, 32)) == flat
    assert_close(pooled(scores.double(), labels), flat, EXACT)
    assert_close(pooled(scores.half().float(), labels), reference(scores.half().float(), labels), TOL)


def test_nan_scores_raise() -> None:
    metric = AnomalyMetrics()
    with pytest.raises(ValueError, match="NaN"):
        metric.update(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


def test_missing_class_raises() -> None:
    metric = AnomalyMetrics()
    metric.update(torch.rand(100), torch.zeros(100, dtype=torch.bool))
    with pytest.raises(ValueError, match="no anomaly pixels"):
        metric.compute()
    metric = AnomalyMetrics()
    metric.update(torch.rand(100), torch.ones(100, dtype=torch.bool))
    with pytest.raises(ValueError, match="no normal pixels"):
        metric.compute()


def test_empty_update_is_noop_and_no_data_raises() -> None:
    metric = AnomalyMetrics()
    metric.update(torch.empty(0), torch.empty(0, dtype=torch.bool))
    metric.update(torch.rand(10), torch.ones(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool))
    assert int(pooled_state(metric, "counts").sum()) == 0
    with pytest.raises(ValueError, match="before any pixel"):
        metric.compute()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="before any pixel"):
        AnomalyMetrics().compute()  # torchmetrics also warns: compute() before update()


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        AnomalyMetrics().update(torch.rand(10), torch.ones(11, dtype=torch.bool))


def test_bins_are_monotone_and_cover_range() -> None:
    values = [-math.inf, -1e30, -8.4e6, -3.0, -1.0, -0.999999, -1e-12, -1e-30, -0.0, 0.0, 1e-30,
              1e-12, 1e-6, 0.5, 1.0, 8.4e6, 1e30, math.inf]
    bins = [bin_of(v) for v in values]
    assert bins == sorted(bins)
    assert bins[0] == 0 and bins[-1] == NUM_BINS - 1
    assert bin_of(-0.0) == bin_of(0.0) == bin_of(1e-30) == bin_of(-1e-30) == NUM_BINS // 2
    assert bin_of(1e-12) > bin_of(1e-30)  # inside the exponent window: resolved
    # tensor path agrees with the scalar definition, in every code path (pos, neg, mixed)
    for t in (torch.tensor(values[:8]), torch.tensor(values[10:]), torch.tensor(values)):
        where, counts, _ = histogram(t, torch.zeros_like(t, dtype=torch.bool))
        if isinstance(where, int):  # dense: columns are consecutive bins from gmin
            where = torch.arange(where, where + counts.shape[1])
        assert where[counts[0] > 0].tolist() == sorted(set(bin_of(v) for v in t.tolist()))


def test_curves() -> None:
    scores, labels = realistic("gauss", 100_000, seed=13)
    metric = AnomalyMetrics()
    metric.update(scores, labels)
    curves = metric.curves(max_points=200)
    assert set(curves) == {"precision", "recall", "fpr", "tpr"}
    assert all(len(v) <= 200 and len(v) > 100 for v in curves.values())
    assert np.all(np.diff(curves["recall"]) >= 0) and np.all(np.diff(curves["fpr"]) >= 0)
    assert curves["recall"][-1] == 1.0 and curves["fpr"][-1] == 1.0
    auc = np.trapezoid(np.r_[0, curves["tpr"]], np.r_[0, curves["fpr"]])
    assert abs(auc - metric.compute()["auroc"]) < 1e-3


def per_image_reference(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    values = [reference(s, y) for s, y in zip(scores, labels) if y.any() and not y.all()]
    out = {k: float(np.mean([v[k] for v in values])) for k in ("aupr", "auroc", "fpr95")}
    out["num_images"] = len(values)
    return out


def test_per_image_protocol() -> None:
    scores, labels = realistic("msp", 6 * 100 * 120, seed=14)
    scores, labels = scores.view(6, 100, 120), labels.view(6, 100, 120).clone()
    labels[1] = False  # no anomaly: skipped
    labels[4] = True  # no normal pixel: skipped
    want = per_image_reference(scores, labels)
    metric = PerImageAnomalyMetrics()
    metric.update(scores[:3], labels[:3])
    metric.update(scores[3:], labels[3:])
    got = metric.compute()
    assert got["num_images"] == want["num_images"] == 4
    assert_close(got, want, TOL)
    pooled_values = pooled(scores, labels)
    assert abs(got["aupr"] - pooled_values["aupr"]) > 1e-3  # really a different protocol


def test_per_image_ties_exact_valid_and_merge() -> None:
    gen = torch.Generator().manual_seed(15)
    labels = torch.rand(4, 50, 50, generator=gen) < 0.05
    scores = (torch.randn(4, 50, 50, generator=gen) + labels).round(decimals=1)
    valid = torch.rand(4, 50, 50, generator=gen) < 0.8
    want = per_image_reference(
        [s[v] for s, v in zip(scores, valid)], [y[v] for y, v in zip(labels, valid)]
    )
    a, b = PerImageAnomalyMetrics(), PerImageAnomalyMetrics()
    a.update(scores[:2], labels[:2], valid[:2])
    b.update(scores[2:], labels[2:], valid[2:])
    a.merge_state(b)
    got = a.compute()
    assert got["num_images"] == 4
    assert_close(got, want, EXACT)


def test_per_image_no_qualifying_image_raises() -> None:
    metric = PerImageAnomalyMetrics()
    metric.update(torch.rand(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="no image"):
        metric.compute()
    with pytest.raises(ValueError, match="N, H, W"):
        metric.update(torch.rand(8), torch.zeros(8, dtype=torch.bool))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_device_path_matches_cpu_and_stays_on_device(device: str) -> None:
    scores, labels = realistic("gauss_mix", 100_000, seed=16)
    valid = torch.rand(100_000, generator=torch.Generator().manual_seed(17)) < 0.9
    metric = AnomalyMetrics().to(device)
    s, y, v = scores.to(device), labels.to(device), valid.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host-device sync in update raises
    try:
        metric.update(s, y, v)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    assert {t.device.type for t in (metric.counts, metric.pixels, metric.nan_pixels)} == {device}
    assert metric.compute() == pooled(scores, labels, valid)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_scores_raise_on_every_device(device: str) -> None:
    scores = torch.tensor([0.1, float("nan"), 0.3], device=device)
    labels = torch.tensor([True, False, False], device=device)
    metric = AnomalyMetrics().to(device)
    if device == "cpu":  # checked right away where that is free
        with pytest.raises(ValueError, match="NaN"):
            metric.update(scores, labels)
    else:  # counted without a sync, reported by compute
        metric.update(scores, labels)
        with pytest.raises(ValueError, match="1 valid pixels had NaN"):
            metric.compute()


def test_sync_free_path_equals_host_path(monkeypatch: pytest.MonkeyPatch, histogram_only) -> None:
    # The GPU code path (no gathering, NaN counted for compute) run on the CPU: same states.
    scores, labels = realistic("gauss_mix", 60_000, seed=19)
    valid = torch.rand(60_000, generator=torch.Generator().manual_seed(20)) < 0.8
    host = AnomalyMetrics()
    host.update(scores, labels, valid)
    host.update(scores[:1000], labels[:1000])
    monkeypatch.setattr(anomaly, "_host_sync_is_free", lambda device: False)

    def reads_device_values(self):  # the block table's facts are read back to the host: a sync on a GPU
        raise AssertionError("update read the block table back on the sync-free path")

    device_like = AnomalyMetrics()
    with monkeypatch.context() as patch:
        patch.setattr(AnomalyMetrics, "_table_facts", reads_device_values)
        device_like.update(scores, labels, valid)
        device_like.update(scores[:1000], labels[:1000])
    assert bool((device_like.offsets >= 0).all())  # the sync-free path allocates every block up front
    for name in host._defaults:
        if name != "offsets":
            assert torch.equal(pooled_state(host, name), pooled_state(device_like, name)), name
    device_like.update(torch.tensor([float("nan"), 1.0]), torch.tensor([False, True]), torch.tensor([True, True]))
    with pytest.raises(ValueError, match="1 valid pixels had NaN"):
        device_like.compute()


def test_scores_on_another_device_raise() -> None:
    with pytest.raises(ValueError, match=r"metric.to\(scores.device\)"):
        AnomalyMetrics().update(torch.rand(4, device="meta"), torch.ones(4, dtype=torch.bool, device="meta"))


def test_update_raises_before_a_bin_overflows(monkeypatch: pytest.MonkeyPatch, histogram_only) -> None:
    monkeypatch.setattr(anomaly, "_INT32_MAX", 1000)  # pretend bins hold at most 1000 pixels
    metric = AnomalyMetrics()
    metric.update(torch.full((600,), 0.5), torch.zeros(600, dtype=torch.bool))
    metric.update(torch.rand(600) + 1.0, torch.zeros(600, dtype=torch.bool))  # other bins: fine
    metric.update(torch.full((300,), 0.5), torch.ones(300, dtype=torch.bool))  # other class row: fine
    valid = torch.zeros(600, dtype=torch.bool)
    valid[:400] = True
    metric.update(torch.full((600,), 0.5), torch.zeros(600, dtype=torch.bool), valid)  # 1000: just fits
    with pytest.raises(ValueError, match="overflow"):
        metric.update(torch.full((1,), 0.5), torch.zeros(1, dtype=torch.bool))
    assert int(pooled_state(metric, "counts").sum()) == int(metric.pixels) == 1900  # nothing was added by the failed update


def test_compute_detects_wrapped_counts(histogram_only) -> None:
    metric = AnomalyMetrics()
    scores = torch.rand(1000)
    metric.update(scores, torch.arange(1000) % 2 == 1)
    b = bin_of(float(scores[0]))  # a normal pixel's bin
    where = int(metric.offsets[b // anomaly.BLOCK]) + b % anomaly.BLOCK
    metric.counts[0, where] -= 2**31 - 1  # what an int32 wrap-around in a DDP sum looks like (lane 0)
    with pytest.raises(ValueError, match="overflowed"):
        metric.compute()


def test_bin_index_matches_scalar_definition() -> None:
    gen = torch.Generator().manual_seed(18)
    values = torch.cat([
        torch.randn(5000, generator=gen) * torch.logspace(-45, 38, 5000).float(),
        torch.tensor([0.0, -0.0, math.inf, -math.inf, 2.0**-40, -(2.0**-40), 2.0**23, -(2.0**23), 1e-45]),
    ])
    assert bin_index(values).tolist() == [bin_of(v) for v in values.tolist()]


def test_update_outside_inference_mode_after_one_inside_it():
    """The shared scratch buffers made in Lightning's test loop (inference mode) must not break a later update
    outside it (an in-place write into an inference tensor raises there)."""
    scores, labels = torch.randn(4, 24, 40), torch.rand(4, 24, 40) < 0.1
    with torch.inference_mode():
        AnomalyMetrics().update(scores, labels)
    metric = AnomalyMetrics()
    metric.update(scores, labels)
    assert 0.0 <= metric.compute()["auroc"] <= 1.0


def test_blocks_allocated_outside_inference_mode_after_updates_inside_it(histogram_only) -> None:
    """The block table's cached facts made under inference mode are read-only outside it: an update there that
    needs new blocks must still count every pixel (and zero its new blocks)."""
    scores, labels = realistic("entropy", 40_000, seed=21)
    metric = AnomalyMetrics()
    with torch.inference_mode():
        metric.update(scores[:20_000], labels[:20_000])
    metric.update(scores[20_000:] * 5.0 + 3.0, labels[20_000:])  # other blocks
    assert metric.compute() == pooled(torch.cat([scores[:20_000], scores[20_000:] * 5.0 + 3.0]), labels)


def test_table_facts_kept_up_to_date_by_allocations_equal_recomputed_ones(histogram_only) -> None:
    """_allocate updates the cached block-table facts (used blocks, key shift) in place; they must equal the facts
    recomputed from the table, after first blocks, strays and a grown pool."""
    gen = torch.Generator().manual_seed(3)
    metric = AnomalyMetrics()
    for step in range(6):
        scores = torch.randn(30_000, generator=gen) * 10.0 ** (step - 2)
        metric.update(scores, torch.rand(30_000, generator=gen) < 0.05)
        used, shift, dense = metric._table_facts()
        metric._table_writes += 1  # forces a recomputation
        want_used, want_shift, want_dense = metric._table_facts()
        assert (used, dense) == (want_used, want_dense) and torch.equal(shift, want_shift)


def test_histogram_sparse_case_on_the_cpu_equals_the_unique_path() -> None:
    """The per-image histogram's sparse case (bin span above the pixel count) sorts codes with numpy on the CPU; it
    gives torch.unique's bins, counts and tie flags exactly, with infinities, tiny and tied scores, few and many
    anomalies."""
    gen = torch.Generator().manual_seed(1)
    for trial in range(60):
        n = int(torch.randint(1, 4000, (1,), generator=gen))
        scale = 10 ** float(torch.rand(1, generator=gen) * 6)
        s = (torch.randn(n, generator=gen) * scale).round(decimals=trial % 4)
        if trial % 3 == 0:
            s[: n // 3] = float("inf")
        if trial % 5 == 0:
            s = s * 1e-14
        if trial % 7 == 0:
            s[n // 2 :] = float("-inf")
        labels = torch.rand(n, generator=gen) < (0.2 if trial % 2 else 0.9)
        idx = bin_index(s)
        gmin = int(idx.min())
        idx -= gmin
        bins, inverse = torch.unique(idx, return_inverse=True)
        k = bins.numel()
        want_distinct = anomaly._distinct(inverse[labels], anomaly._low_bits(s[labels]), k)
        want_counts = torch.bincount(inverse + labels * k, minlength=2 * k).view(2, k)
        got_bins, got_counts, got_distinct = anomaly._sorted_histogram(idx, labels, s, gmin)
        assert torch.equal(got_bins.long(), bins.long() + gmin), trial
        assert torch.equal(got_counts, want_counts), trial
        assert torch.equal(got_distinct, want_distinct), trial



KEPT_MAPS = ["msp", "entropy", "energy", "gauss_mix", "tied", "infinite", "tiny"]


def kept_map(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind in ("tied", "infinite", "tiny"):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.rand(n, generator=gen) < 0.02
        scores = torch.randn(n, generator=gen) + labels
        if kind == "tied":
            scores = scores.round(decimals=1)
        elif kind == "infinite":
            scores[torch.rand(n, generator=gen) < 0.05] = float("inf")
            scores[torch.rand(n, generator=gen) < 0.05] = float("-inf")
        else:
            scores = scores * 1e-13  # around the centre bin
        return scores, labels
    return realistic(kind, n, seed)


@pytest.mark.parametrize("kind", KEPT_MAPS)
def test_small_evaluations_keep_their_pixels_and_equal_the_histogram(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to SORT_BELOW_PIXELS the CPU metric keeps the pixels and sorts them at compute: every number (metrics,
    error bounds, curves) equals the histogram's, and the state is 5 bytes a pixel."""
    scores, labels = kept_map(kind, 120_000, seed=31)
    kept = AnomalyMetrics()
    for chunk_s, chunk_y in zip(scores.split(50_000), labels.split(50_000)):
        kept.update(chunk_s, chunk_y)
    assert kept.counts.numel() == 0 and kept.state_bytes() == 5 * 120_000
    with monkeypatch.context() as patch:
        patch.setattr(anomaly, "SORT_BELOW_PIXELS", 0)
        binned = AnomalyMetrics()
        binned.update(scores, labels)
    assert binned.counts.numel() > 0
    assert kept.compute() == binned.compute()
    assert kept.error_bounds() == binned.error_bounds()
    for key, values in kept.curves().items():
        np.testing.assert_array_equal(values, binned.curves()[key])


def test_kept_pixels_go_into_the_histogram_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomaly, "SORT_BELOW_PIXELS", 30_000)
    scores, labels = realistic("entropy", 100_000, seed=32)
    metric = AnomalyMetrics()
    metric.update(scores[:20_000], labels[:20_000])
    assert metric.counts.numel() == 0 and metric._kept_pixels == 20_000
    metric.update(scores[20_000:], labels[20_000:])  # past the limit: everything into the histogram
    assert metric._kept_pixels == 0 and metric.counts.numel() > 0
    metric.update(scores[:10], labels[:10])  # and what follows too
    assert metric._kept_pixels == 0
    want = torch.cat([scores, scores[:10]]), torch.cat([labels, labels[:10]])
    assert metric.compute() == pooled(*want) and int(metric.pixels) == 100_010


def test_kept_pixels_survive_forward_merge_sync_and_moves() -> None:
    scores, labels = realistic("gauss_mix", 60_000, seed=33)
    want = pooled(scores, labels)
    via_forward = AnomalyMetrics()
    via_forward(scores[:30_000], labels[:30_000])  # forward keeps the global state aside and reduces into it
    via_forward(scores[30_000:], labels[30_000:])
    assert via_forward.compute() == want
    a, b = AnomalyMetrics(), AnomalyMetrics()
    a.update(scores[:25_000], labels[:25_000])
    b.update(scores[25_000:], labels[25_000:])
    a.merge_state(b)  # b's kept pixels reach a through its states
    assert a.compute() == want
    c = AnomalyMetrics()
    c.update(scores, labels)
    cached = c._copy_state_dict()  # what sync() caches before a DDP gather: the kept pixels are in it
    assert c._kept_pixels == 0 and int(cached["pixels"]) == 60_000 and cached["counts"].numel() > 0
    d = AnomalyMetrics()
    d.update(scores, labels)
    d = d.to("cpu")
    assert d._kept_pixels == 0 and d.compute() == want


def test_kept_pixels_are_copies_of_the_callers_tensors() -> None:
    scores, labels = realistic("msp", 20_000, seed=34)
    want = pooled(scores, labels)
    metric = AnomalyMetrics()
    s, y = scores.clone(), labels.clone()
    metric.update(s, y)
    s.fill_(0.0)  # a caller reusing its buffers for the next batch
    y.fill_(True)
    assert metric.compute() == want


class _Module:
    """What AnomalyEvaluation reads of the LightningModule."""

    def __init__(self, scorers):
        from hazardseg.data.labels import LabelSpec

        self.scorers = dict.fromkeys(scorers)
        self.labels = LabelSpec(("road", "car"), ignore_index=255, anomaly_values=(2,))
        self.device = torch.device("cpu")
        self.logged: dict[str, float] = {}

    def log_dict(self, values, **kwargs):
        self.logged.update({k: float(v) for k, v in values.items()})

    def print(self, *args):
        pass


def _evaluation_batches(nan_at: int | None = None):
    rng = torch.Generator().manual_seed(11)
    for i in range(4):
        mask = torch.randint(0, 3, (2, 24, 32), generator=rng)
        mask[:, :2] = 255
        scores = {"a": torch.randn(2, 24, 32, generator=rng) + mask.eq(2) * 1.5,
                  "b": torch.rand(2, 24, 32, generator=rng).log()}
        if i == nan_at:
            scores["b"][1, 5, 5] = float("nan")
        yield {"mask": mask}, {"scores": scores}


def test_anomaly_evaluation_logs_the_metrics_of_its_maps():
    from types import SimpleNamespace

    from hazardseg.callbacks import AnomalyEvaluation

    module, callback = _Module(["a", "b"]), AnomalyEvaluation(curves=False)
    trainer = SimpleNamespace(loggers=[], is_global_zero=True)
    callback.on_test_start(trainer, module)
    pooled = {n: AnomalyMetrics() for n in "ab"}
    images = {n: PerImageAnomalyMetrics() for n in "ab"}
    for batch, outputs in _evaluation_batches():
        callback.on_test_batch_end(trainer, module, outputs, batch, 0)
        is_anomaly, valid = module.labels.is_anomaly(batch["mask"]), module.labels.valid(batch["mask"])
        for name, scores in outputs["scores"].items():
            pooled[name].update(scores, is_anomaly, valid)
            images[name].update(scores, is_anomaly, valid)
    callback.on_test_epoch_end(trainer, module)
    for name in "ab":
        want = {**{f"test/{name}/{k}": float(v) for k, v in pooled[name].compute().items()},
                **{f"test/{name}/per_image/{k}": float(v) for k, v in images[name].compute().items()}}
        assert {k: module.logged[k] for k in want} == want
    assert len(callback.results()["a"]["precision"]) > 1  # the curves of the results channel


def test_anomaly_evaluation_refuses_a_nan_map():
    from types import SimpleNamespace

    from hazardseg.callbacks import AnomalyEvaluation

    module, callback = _Module(["a", "b"]), AnomalyEvaluation(curves=False)
    trainer = SimpleNamespace(loggers=[], is_global_zero=True)
    callback.on_test_start(trainer, module)
    with pytest.raises(ValueError, match="NaN"):
        for batch, outputs in _evaluation_batches(nan_at=3):
            callback.on_test_batch_end(trainer, module, outputs, batch, 0)


def test_update_outside_inference_mode_in_blocks_made_inside_it(histogram_only) -> None:
    """Counts allocated under inference mode are updated in place by a later update outside it, into the same
    blocks (no new storage that would replace them)."""
    scores, labels = realistic("msp", 20_000, seed=22)
    metric = AnomalyMetrics()
    with torch.inference_mode():
        metric.update(scores, labels)
    metric.update(scores, labels)
    assert metric.compute() == pooled(torch.cat([scores, scores]), torch.cat([labels, labels]))


def test_evaluation_workers_run_torch_on_one_core_and_leave_the_callers_threads() -> None:
    """Background workers beside the test loop run their torch operations single-threaded (torch's thread count is
    per thread), unless asked not to (predict.py's writer scores on every core): that one takes the caller's count,
    even after a single-threaded worker changed torch's process-wide default; the caller keeps its own."""
    from hazardseg.callbacks.base import Background

    before = torch.get_num_threads()
    seen: list[int] = []
    single, default = Background(depth=1, name="t1"), Background(depth=1, name="t2", single_threaded=False)
    try:
        single.submit(lambda: seen.append(torch.get_num_threads()))
        single.drain()
        default.submit(lambda: seen.append(torch.get_num_threads()))
        default.drain()
    finally:
        single.close()
        default.close()
    assert seen[0] == 1 and seen[1] == before and torch.get_num_threads() == before
