"""Scorers against their definitions, SML statistics/post-processing, persistence and Hydra configs."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hazardseg.errors import ConfigError, DataError, NotFittedError
from hazardseg.scorers import MSP, SML, Energy, Entropy, MaxLogit, Scorer, build_scorers
from hazardseg.scorers.densehybrid import DenseHybrid
from hazardseg.scorers.mahalanobis import Mahalanobis
from hazardseg.scorers.mask_classification import EAM, UNO, Mask2Anomaly, RbA
from hazardseg.scorers.postprocess import BoundarySuppression, DilatedSmoothing, find_boundaries
from hazardseg.scorers.void import VoidProbability

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SCORER_CLASSES = {"msp": MSP, "maxlogit": MaxLogit, "entropy": Entropy, "energy": Energy, "sml": SML,
                  "mahalanobis": Mahalanobis, "void": VoidProbability, "densehybrid": DenseHybrid,
                  "rba": RbA, "mask2anomaly": Mask2Anomaly, "eam": EAM, "uno": UNO}

# Two pixels (N=1, C=3, H=1, W=2): a peaked one (1, 2, 3) and a uniform one (0, 0, 0).
LOGITS = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]).reshape(1, 3, 1, 2)


def _softmax(v: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in v)
    return [math.exp(x) / z for x in v]


# ---------------------------------------------------------------- stateless scorers: formulas
def test_msp_formula() -> None:
    # log(1 - max softmax): same ranking as the paper's -max softmax, without the float32 collapse
    expected = [math.log(1 - max(_softmax([1, 2, 3]))), math.log(2 / 3)]
    assert MSP()(LOGITS).flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_msp_tied_max_and_infinite_logits() -> None:
    inf = float("inf")
    pixels = [
        [2.0, 2.0, -inf],  # two tied maxima: p_max = 1/2, the tie counts as "another class"
        [5.0, 5.0, 5.0],  # uniform: 1 - p_max = 2/3
        [0.0, -inf, -inf],  # every other class impossible: 1 - p_max = 0
        [0.0, -200.0, -300.0],  # 1 - p_max = e^-200: far below float32's smallest normal, still finite
    ]
    logits = torch.tensor(pixels).T.reshape(1, 3, 1, 4)
    got = MSP()(logits).flatten().tolist()
    assert got[:2] == pytest.approx([math.log(0.5), math.log(2 / 3)], abs=1e-6)
    assert got[2] == -inf
    assert got[3] == pytest.approx(-200.0, abs=1e-4)
    single_class = MSP()(torch.randn(1, 1, 2, 2))
    assert torch.equal(single_class, torch.full((1, 2, 2), -inf))


def test_msp_and_entropy_keep_resolution_of_confident_pixels() -> None:
    # 1 - p_max from 1e-12 to 1e-5: -max softmax is exactly -1.0 in float32 for most of them
    gaps = torch.linspace(12.0, 28.0, 50)
    logits = torch.zeros(1, 3, 1, 50)
    logits[0, 0, 0] = gaps  # class 0 wins by `gap`, the other two share the rest equally
    exact = [math.log(2 * math.exp(-g) / (1 + 2 * math.exp(-g))) for g in gaps.double().tolist()]
    assert MSP()(logits).flatten().tolist() == pytest.approx(exact, rel=1e-6)
    assert int((-torch.softmax(logits, 1).amax(1) == -1.0).sum()) > 25  # the float32 collapse it avoids

    def entropy64(g: float) -> float:
        p = [1 / (1 + 2 * math.exp(-g))] + [math.exp(-g) / (1 + 2 * math.exp(-g))] * 2
        return -sum(q * math.log(q) for q in p)

    # naive float32 -sum p log p drops the max class's ~(1 - p_max) term: up to 6% low here
    assert Entropy()(logits).flatten().tolist() == pytest.approx([entropy64(g) for g in gaps.tolist()], rel=1e-5)


def test_maxlogit_formula() -> None:
    assert MaxLogit()(LOGITS).flatten().tolist() == pytest.approx([-3.0, 0.0], abs=1e-6)


def test_entropy_formula() -> None:
    p = _softmax([1, 2, 3])
    expected = [-sum(q * math.log(q) for q in p), math.log(3)]
    assert Entropy()(LOGITS).flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_entropy_handles_minus_inf_logit() -> None:
    logits = torch.tensor([0.0, 0.0, float("-inf")]).reshape(1, 3, 1, 1)
    assert Entropy()(logits).item() == pytest.approx(math.log(2), abs=1e-6)


def _spaced_confident_logits(n: int = 20_000, classes: int = 13, seed: int = 0) -> torch.Tensor:
    """(1, C, n, 1) float32 logits whose ``1 - p_max`` are log-spaced 0.11% apart from 1e-10 to 0.5.

    The spacing is far above float32 rounding of the logits (~1e-6 relative), so the float64
    ranking is unambiguous; the other classes share the remaining mass in random proportions.
    """
    gen = torch.Generator().manual_seed(seed)
    log_eps = torch.linspace(math.log(1e-10), math.log(0.5), n, dtype=torch.float64)[torch.randperm(n, generator=gen)]
    top = 5 + 10 * torch.rand(n, generator=gen, dtype=torch.float64)
    others = torch.randn(n, classes - 1, generator=gen, dtype=torch.float64) * 3
    others += (top + log_eps - torch.log1p(-log_eps.exp()) - others.logsumexp(1))[:, None]
    logits = torch.cat([others, top[:, None]], 1).gather(1, torch.rand(n, classes, generator=gen).argsort(1))
    return logits.float().T.reshape(1, classes, n, 1)


def _max_softmax_float64(logits: torch.Tensor) -> torch.Tensor:
    """pytorch-ood's ``MaxSoftmax.score`` (``-softmax(l).max``, T=1), evaluated in float64."""
    return -logits.double().softmax(dim=1).max(dim=1).values


def test_msp_ranking_equals_float64_max_softmax() -> None:
    logits = _spaced_confident_logits()
    ours, paper = MSP()(logits).flatten(), _max_softmax_float64(logits).flatten()
    assert torch.equal(torch.argsort(ours), torch.argsort(paper))  # same order, every pixel
    assert ours.unique().numel() == ours.numel()  # and no ties introduced
    naive = -torch.softmax(logits, 1).amax(1).flatten()
    assert naive.unique().numel() < ours.numel() // 2  # float32 -max softmax ties most of them


def test_entropy_ranking_equals_float64_entropy() -> None:
    logits = _spaced_confident_logits(seed=1)
    lg = logits.double()
    paper = -(lg.softmax(1) * lg.log_softmax(1)).sum(1).flatten()
    order = torch.argsort(paper)
    ours, ref = Entropy()(logits).flatten().double()[order], paper[order]
    # wherever the float64 entropy grows by more than float32 rounding, ours grows too
    distinct = (ref[1:] - ref[:-1]) > 1e-5 * ref[1:]
    assert not bool(((ours[1:] <= ours[:-1]) & distinct).any())
    assert distinct.float().mean() > 0.9


def test_msp_ranking_equals_pytorch_ood_max_softmax() -> None:
    detector = pytest.importorskip("pytorch_ood.detector")
    logits = _spaced_confident_logits(seed=2)
    reference = detector.MaxSoftmax.score(logits.double()).flatten()
    assert torch.equal(reference, _max_softmax_float64(logits).flatten())  # the reproduction above
    assert torch.equal(torch.argsort(MSP()(logits).flatten()), torch.argsort(reference))


@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_energy_formula(t: float) -> None:
    expected = [-t * math.log(sum(math.exp(x / t) for x in [1, 2, 3])), -t * math.log(3)]
    assert Energy(temperature=t)(LOGITS).flatten().tolist() == pytest.approx(expected, abs=1e-5)


def test_energy_rejects_bad_temperature() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        Energy(temperature=0.0)


@pytest.mark.parametrize("cls", [MSP, MaxLogit, Entropy, Energy])
def test_uniform_scores_higher_than_peaked(cls: type[Scorer]) -> None:
    # Same scale: uniform (0,0,0) vs confident (10,0,0).
    logits = torch.tensor([[0.0, 10.0], [0.0, 0.0], [0.0, 0.0]]).reshape(1, 3, 1, 2)
    uniform, peaked = cls()(logits).flatten().tolist()
    assert uniform > peaked


@pytest.mark.parametrize("cls", [MSP, MaxLogit, Entropy, Energy])
def test_output_shape_and_float32_from_half(cls: type[Scorer]) -> None:
    logits = torch.randn(2, 4, 5, 6)
    out = cls()(logits.to(torch.bfloat16))
    assert out.shape == (2, 5, 6) and out.dtype == torch.float32
    # Computed in fp32 from the bf16-rounded logits, not in bf16 arithmetic.
    ref = cls()(logits.to(torch.bfloat16).float())
    assert torch.allclose(out, ref, atol=1e-6)


def test_stateless_scorers_are_fitted() -> None:
    for cls in (MSP, MaxLogit, Entropy, Energy):
        s = cls()
        assert s.is_fitted and not s.requires_fit and s.fit([]) is s


# ---------------------------------------------------------------- SML statistics
def _batches(seed: int = 0, n: int = 3, classes: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bias = torch.linspace(0, 1, classes).reshape(1, classes, 1, 1)  # unequal class frequencies
    return [torch.randn(2, classes, 5, 7, generator=g) * (1 + i) + bias for i in range(n)]


def _direct_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, pred = logits.double().max(dim=1)
    classes = logits.shape[1]
    mean = torch.stack([m[pred == c].mean() for c in range(classes)])
    std = torch.stack([m[pred == c].std(unbiased=True) for c in range(classes)])
    return mean.float(), std.float()


def test_sml_fit_matches_direct_computation() -> None:
    batches = _batches()
    sml = SML().fit({"logits": b} for b in batches)  # a generator: fit must stream
    mean, std = _direct_stats(torch.cat(batches))
    assert torch.allclose(sml.class_mean, mean, atol=1e-5)
    assert torch.allclose(sml.class_std, std, atol=1e-5)
    assert sml.class_count.sum().item() == sum(b[:, 0].numel() for b in batches)


def test_sml_streaming_equals_single_batch() -> None:
    batches = _batches(seed=1)
    streamed = SML().fit([{"logits": b} for b in batches])
    single = SML().fit([{"logits": torch.cat(batches)}])
    for key in ("class_mean", "class_std"):
        assert torch.allclose(getattr(streamed, key), getattr(single, key), atol=1e-6)
    assert torch.equal(streamed.class_count, single.class_count)


def test_sml_fit_accepts_half_precision_and_extra_keys() -> None:
    batches = _batches(seed=2)
    sml = SML().fit({"logits": b.half(), "mask": torch.zeros(2, 5, 7, dtype=torch.long)} for b in batches)
    mean, _ = _direct_stats(torch.cat([b.half().float() for b in batches]))
    assert sml.class_mean.dtype == torch.float32 and torch.allclose(sml.class_mean, mean, atol=1e-5)


def test_sml_unpredicted_class_warns_and_defaults() -> None:
    logits = torch.randn(2, 4, 6, 6)
    logits[:, 2] = -100.0  # class 2 never wins the argmax
    with pytest.warns(RuntimeWarning, match=r"\[2\]"):
        sml = SML().fit([{"logits": logits}])
    # falls back to the statistics pooled over every training pixel
    max_logit = logits.max(dim=1).values.flatten().double()
    assert sml.class_mean[2].item() == pytest.approx(max_logit.mean().item(), rel=1e-5)
    assert sml.class_std[2].item() == pytest.approx(max_logit.std().item(), rel=1e-5)
    assert sml.class_count[2].item() == 0


def test_sml_fit_errors() -> None:
    with pytest.raises(DataError, match="no batches"):
        SML().fit([])
    with pytest.raises(DataError, match="logits"):
        SML().fit([{"features": torch.zeros(1, 2, 3, 3)}])
    with pytest.raises(DataError, match="number of classes"):
        SML().fit([{"logits": torch.randn(1, 3, 4, 4)}, {"logits": torch.randn(1, 5, 4, 4)}])


def test_sml_not_fitted_error() -> None:
    sml = SML()
    assert sml.requires_fit and not sml.is_fitted
    with pytest.raises(NotFittedError, match="scorer 'sml' has no fitted statistics: call fit()"):
        sml(torch.randn(1, 3, 4, 4))
    sml.fit([{"logits": torch.randn(2, 3, 8, 8)}])
    assert sml.is_fitted and sml(torch.randn(1, 3, 4, 4)).shape == (1, 4, 4)


def test_sml_class_count_mismatch_at_score_time() -> None:
    sml = SML().fit([{"logits": torch.randn(2, 3, 8, 8)}])
    with pytest.raises(DataError, match="3 classes"):
        sml(torch.randn(1, 5, 4, 4))


def test_sml_state_dict_roundtrip(tmp_path: Path) -> None:
    sml = SML().fit([{"logits": b} for b in _batches(seed=3)])
    path = tmp_path / "sml.pt"
    torch.save(sml.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"class_mean", "class_std", "class_count"}  # no post-processing kernels

    fresh = SML()
    with pytest.raises(NotFittedError):
        fresh(torch.randn(1, 4, 6, 6))
    fresh.load_state_dict(state)
    for key in state:
        assert torch.equal(getattr(fresh, key), getattr(sml, key))
    x = torch.randn(2, 4, 9, 11)
    assert fresh.is_fitted and torch.equal(fresh(x), sml(x))


# ---------------------------------------------------------------- SML score and post-processing
def test_sml_plain_score_formula() -> None:
    sml = SML(boundary_suppression=False, dilated_smoothing=False)
    sml.fit([{"logits": b} for b in _batches(seed=4)])
    x = torch.randn(2, 4, 5, 6)
    m, pred = x.max(dim=1)
    expected = -(m - sml.class_mean[pred]) / sml.class_std[pred]
    assert torch.allclose(sml(x), expected, atol=1e-6)
    # Hand check on one pixel with known statistics.
    sml.class_mean = torch.tensor([1.0, 2.0, 0.0, 0.0])
    sml.class_std = torch.tensor([1.0, 4.0, 1.0, 1.0])
    pixel = torch.tensor([0.0, 10.0, 1.0, 2.0]).reshape(1, 4, 1, 1)
    assert sml(pixel).item() == pytest.approx(-(10.0 - 2.0) / 4.0)


def test_sml_post_steps_are_switchable() -> None:
    stats = [{"logits": b} for b in _batches(seed=5)]
    # Blocky logits: regions of one predicted class with boundaries between them. (With i.i.d. noise
    # every pixel is a boundary pixel and suppression has no interior neighbours to borrow from.)
    gen = torch.Generator().manual_seed(7)
    coarse = torch.randn(1, 4, 3, 4, generator=gen) * 3
    x = torch.nn.functional.interpolate(coarse, size=(12, 16), mode="nearest") + 0.1 * torch.randn(1, 4, 12, 16, generator=gen)
    plain = SML(False, False).fit(stats)
    raw = -plain(x)  # standardized max logit
    pred = x.argmax(1)
    both = SML().fit(stats)(x)
    only_bs = SML(True, False).fit(stats)(x)
    only_ds = SML(False, True).fit(stats)(x)
    assert torch.allclose(only_bs, -BoundarySuppression()(raw, pred), atol=1e-6)
    assert torch.allclose(only_ds, -DilatedSmoothing()(raw), atol=1e-6)
    assert torch.allclose(both, -DilatedSmoothing()(BoundarySuppression()(raw, pred)), atol=1e-6)
    for out in (only_bs, only_ds, both):
        assert not torch.allclose(out, -raw, atol=1e-3)


def test_find_boundaries_geodesic_border() -> None:
    pred = torch.tensor([[0, 0, 1, 1]] * 3).reshape(1, 1, 3, 4)
    expected = torch.tensor([[0.0, 1.0, 1.0, 0.0]] * 3).reshape(1, 1, 3, 4)
    # With zero padding instead of geodesic borders, class-1 pixels on the border would count too.
    assert torch.equal(find_boundaries(pred), expected)


@pytest.mark.parametrize("width,iters", [(1, 1), (4, 4)])
def test_boundary_suppression_hand_example(width: int, iters: int) -> None:
    # Vertical split between columns 1|2 -> boundary columns 1 and 2; each takes the mean of its
    # non-boundary 3x3 neighbours: column 0 (value 1) and column 3 (value 3).
    pred = torch.tensor([[0, 0, 1, 1]] * 3).unsqueeze(0)
    values = torch.tensor([[1.0, 5.0, 7.0, 3.0]] * 3).unsqueeze(0)
    out = BoundarySuppression(width, iters)(values, pred)
    assert torch.equal(out, torch.tensor([[1.0, 1.0, 3.0, 3.0]] * 3).unsqueeze(0))


def _slow_boundary_suppression(
    x: list[list[float]], pred: list[list[int]], width: int, iters: int
) -> list[list[float]]:
    """Independent loop version of the reference algorithm (geodesic morphology, replicate padding)."""
    h, w = len(x), len(x[0])
    inside = lambda i, j: 0 <= i < h and 0 <= j < w  # noqa: E731
    square = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    cross = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    boundary = set()
    for i in range(h):
        for j in range(w):
            dil = max(pred[i + a][j + b] for a, b in cross if inside(i + a, j + b))
            ero = min(pred[i + a][j + b] for a, b in square if inside(i + a, j + b))
            if dil != ero:
                boundary.add((i, j))
    out = [row[:] for row in x]
    diff = width // iters
    for it in range(iters):
        r = 0 if it == iters - 1 else width - diff * it - 1
        near = lambda i, j: any(abs(i - p) + abs(j - q) <= r for p, q in boundary)  # noqa: E731
        expanded = {(i, j) for i in range(h) for j in range(w) if near(i, j)}
        prev = [row[:] for row in out]
        for i, j in expanded:
            vals = []
            for a, b in square:
                ii, jj = min(max(i + a, 0), h - 1), min(max(j + b, 0), w - 1)  # replicate padding
                if (ii, jj) not in expanded:
                    vals.append(prev[ii][jj])
            if vals:
                out[i][j] = sum(vals) / len(vals)
    return out


@pytest.mark.parametrize("width,iters", [(4, 4), (2, 2), (2, 1), (0, 1)])
def test_boundary_suppression_matches_slow_reference(width: int, iters: int) -> None:
    g = torch.Generator().manual_seed(width * 10 + iters)
    pred = torch.zeros(8, 9, dtype=torch.long)
    pred[2:6, 3:7] = 1  # interior square
    pred[6:, :3] = 2  # corner region touching the image border
    values = torch.randn(8, 9, generator=g)
    out = BoundarySuppression(width, iters)(values[None], pred[None])[0]
    expected = torch.tensor(_slow_boundary_suppression(values.tolist(), pred.tolist(), width, iters))
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, values)  # it did change something


def test_boundary_suppression_batch_and_4d() -> None:
    pred = torch.randint(0, 3, (3, 10, 10))
    values = torch.randn(3, 10, 10)
    bs = BoundarySuppression()
    out3 = bs(values, pred)
    out4 = bs(values[:, None], pred)
    assert out4.shape == (3, 1, 10, 10) and torch.equal(out4[:, 0], out3)
    assert torch.equal(out3[1], bs(values[1:2], pred[1:2])[0])  # samples are independent


@pytest.mark.parametrize("width,iters", [(4, 4), (8, 2), (2, 1), (0, 1)])
def test_boundary_suppression_in_bands_equals_one_call(width: int, iters: int, monkeypatch) -> None:
    """On the CPU suppression runs on bands of rows with its receptive field as the halo: the same bits as one call,
    at band edges, at the image's top and bottom and for every image of a batch; one row less of halo is not enough."""
    import hazardseg.maps as maps

    torch.manual_seed(width + iters)
    pred = torch.nn.functional.interpolate(torch.randint(0, 4, (2, 1, 9, 7)).float(), size=(61, 40)).long()[:, 0]
    pred[1, 20:23] = torch.randint(0, 4, (3, 40))  # ragged boundaries
    values = torch.randn(2, 61, 40) * 3
    suppression = BoundarySuppression(width, iters)
    one_call = suppression._suppress(values[:, None], pred[:, None])[:, 0]
    monkeypatch.setattr(maps, "HALO_BAND_ELEMENTS", 2 * 40 * 5)  # bands of 5 rows
    assert torch.equal(suppression(values, pred), one_call)
    if (width, iters) in ((4, 4), (2, 1)):  # the halo is what it needs: a smaller one changes values near band edges
        halo = suppression.reach()
        short = maps.in_row_bands(suppression._suppress, values[:, None], pred[:, None], halo=halo - 1)[:, 0]
        assert not torch.equal(short, one_call)


def test_in_row_bands_heights_and_one_call_when_a_band_spans_the_map(monkeypatch) -> None:
    import hazardseg.maps as maps

    calls = []

    def fn(x: Tensor) -> Tensor:
        calls.append(x.shape[-2])
        return x * 2

    x = torch.randn(1, 1, 30, 8)
    monkeypatch.setattr(maps, "HALO_BAND_ELEMENTS", 8 * 4)
    assert torch.equal(maps.in_row_bands(fn, x, halo=2), x * 2) and calls == [6, 8, 8, 8, 8, 8, 8, 4]
    calls.clear()
    assert torch.equal(maps.in_row_bands(fn, x, halo=13), x * 2) and calls == [30]  # a band and its halos span it


def test_boundary_suppression_config_validation() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        BoundarySuppression(boundary_width=3, boundary_iteration=2)


def test_dilated_smoothing_constant_map_is_constant() -> None:
    x = torch.full((2, 6, 7), 3.5)  # smaller than the 37-pixel receptive field: replicate pad copes
    out = DilatedSmoothing()(x)
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)


def test_dilated_smoothing_impulse_response() -> None:
    x = torch.zeros(1, 41, 41)
    x[0, 20, 20] = 1.0
    out = DilatedSmoothing(kernel_size=7, sigma=1.0, dilation=6)(x)[0]
    z = sum(math.exp(-(r**2) / 2) for r in range(-3, 4)) ** 2  # normaliser of the 7x7 Gaussian
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)  # kernel sums to 1
    assert out[20, 20].item() == pytest.approx(1 / z, abs=1e-6)
    assert out[26, 20].item() == pytest.approx(math.exp(-0.5) / z, abs=1e-6)  # one dilated tap away
    assert out[32, 26].item() == pytest.approx(math.exp(-2.5) / z, abs=1e-6)
    assert out[21, 20].item() == 0.0 and out[23, 23].item() == 0.0  # holes between dilated taps


@pytest.mark.parametrize("kernel_size,dilation", [(7, 6), (5, 2), (3, 1)])
def test_dilated_smoothing_in_bands_equals_one_call(kernel_size: int, dilation: int, monkeypatch) -> None:
    """On the CPU the smoothing runs on bands of rows with the kernel's reach as the halo: the same bits as one
    convolution of the whole map (band edges, top and bottom rows, every image of a batch); a halo one row short
    changes values."""
    import hazardseg.maps as maps

    torch.manual_seed(kernel_size + dilation)
    values = torch.randn(2, 1, 70, 48) * 5
    smoothing = DilatedSmoothing(kernel_size, 1.0, dilation)
    one_call = smoothing._smooth(values)
    monkeypatch.setattr(maps, "HALO_BAND_ELEMENTS", 2 * 48 * 6)  # bands of 6 rows
    assert torch.equal(smoothing(values), one_call)
    assert torch.equal(smoothing(values[:, 0]), one_call[:, 0])
    short = maps.in_row_bands(smoothing._smooth, values, halo=smoothing.reach() - 1)
    assert not torch.equal(short, one_call)


def test_dilated_smoothing_config_validation() -> None:
    with pytest.raises(ConfigError, match="odd"):
        DilatedSmoothing(kernel_size=6)


# ---------------------------------------------------------------- Hydra configs
def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=None, overrides=overrides)


def _outputs() -> dict:
    """Network outputs with every entry some scorer reads (features at stride 4, trained heads), plus a mask."""
    return {"logits": torch.randn(2, 5, 12, 12), "features": torch.randn(2, 8, 3, 3), "feature_stride": 4,
            "void": torch.randn(2, 1, 12, 12), "ood": torch.randn(2, 1, 12, 12),
            # query outputs of a mask-classification network: 6 queries, 5 known classes + negative + no object
            "class_logits": torch.randn(2, 6, 7), "mask_logits": torch.randn(2, 6, 3, 3), "negative_class": 5,
            # every class fills some 4x4 block (feature cell): Mahalanobis sees every class
            "mask": (torch.arange(18) % 5).reshape(2, 3, 3).repeat_interleave(4, 1).repeat_interleave(4, 2)}


def _run(scorers: dict[str, Scorer]) -> None:
    outputs = _outputs()
    for scorer in scorers.values():
        scorer.fit([_outputs()])
        out = scorer(outputs)
        assert out.shape == (2, 12, 12) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SCORER_CLASSES))
def test_each_scorer_yaml_composes_and_builds(name: str) -> None:
    cfg = _compose([f"+scorer={name}"])
    assert list(cfg.scorer) == [name]
    scorers = build_scorers(cfg.scorer)
    assert type(scorers[name]) is SCORER_CLASSES[name]
    _run(scorers)


def test_yaml_exposes_knobs() -> None:
    cfg = _compose(["+scorer=[energy,sml]", "scorer.energy.temperature=2.5", "scorer.sml.boundary_suppression=false"])
    knobs = {"dilated_smoothing", "boundary_width", "boundary_iteration", "kernel_size", "sigma", "dilation"}
    assert set(cfg.scorer.sml) >= knobs
    scorers = build_scorers(cfg.scorer)
    assert scorers["energy"].temperature == 2.5
    assert scorers["sml"].suppress is None and scorers["sml"].smooth is not None


def test_multiple_and_all_compose() -> None:
    assert list(_compose(["+scorer=[msp,sml]"]).scorer) == ["msp", "sml"]
    cfg = _compose(["+scorer=all"])
    assert list(cfg.scorer) == ["msp", "maxlogit", "entropy", "energy", "sml", "mahalanobis", "void", "densehybrid", "rba",
                                "mask2anomaly", "eam", "uno"]
    scorers = build_scorers(cfg.scorer)
    assert {k: type(v) for k, v in scorers.items()} == SCORER_CLASSES
    _run(scorers)


def test_group_override_from_a_primary_config(tmp_path: Path) -> None:
    # How the pipeline uses it: a primary config selecting scorer=msp, overridden on the command line.
    primary = {"defaults": [{"scorer": "msp"}, "_self_"], "hydra": {"searchpath": [f"file://{CONF_DIR}"]}}
    (tmp_path / "train.yaml").write_text(OmegaConf.to_yaml(primary))
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        assert list(compose("train").scorer) == ["msp"]
        assert list(compose("train", overrides=["scorer=[msp,sml]"]).scorer) == ["msp", "sml"]
        assert len(compose("train", overrides=["scorer=all"]).scorer) == len(SCORER_CLASSES)


def test_build_scorers_errors() -> None:
    assert build_scorers(None) == {}
    with pytest.raises(ConfigError, match="nest each scorer"):
        build_scorers({"_target_": "hazardseg.scorers.MSP"})
    with pytest.raises(ConfigError, match="scorer.msp: expected a mapping"):
        build_scorers({"msp": "hazardseg.scorers.MSP"})
    with pytest.raises(ConfigError, match="scorer.bad"):
        build_scorers({"bad": {"_target_": "hazardseg.scorers.DoesNotExist"}})
    with pytest.raises(ConfigError, match="scorer.energy: .*temperature must be > 0"):
        build_scorers(OmegaConf.create({"energy": {"_target_": "hazardseg.scorers.Energy", "temperature": -1}}))
    with pytest.raises(ConfigError, match="not a Scorer"):
        build_scorers({"id": {"_target_": "torch.nn.Identity"}})


def test_panel_anomaly_column_handles_infinite_msp() -> None:
    import numpy as np

    from hazardseg.visualize import _finite_range, prediction_panel

    logits = torch.randn(3, 4, 5) * 3
    logits[1:, 0, 0] = float("-inf")  # one pixel certain: MSP's log(1 - p_max) = -inf there
    scores = MSP()(logits[None])[0]
    assert scores[0, 0] == float("-inf")
    lo, hi = _finite_range(scores.numpy())
    assert np.isfinite([lo, hi]).all() and lo == scores[torch.isfinite(scores)].min().item() and lo < hi
    panel, _ = prediction_panel(torch.zeros(3, 4, 5), torch.zeros(4, 5, dtype=torch.long), logits, 3, "x", anomaly=scores)
    assert panel.dtype == np.uint8 and panel.ndim == 3


def _entropy_with_masked_terms(logits: Tensor) -> Tensor:
    """The entropy's earlier form (five passes for the spread): the scorer's cheaper one must give its bits."""
    top, argmax = logits.max(dim=1, keepdim=True)
    gap = top - logits
    weight = torch.exp(-gap).scatter_(1, argmax, 0.0)
    others = weight.sum(dim=1)
    spread = torch.where(weight > 0, weight * gap, 0.0).sum(dim=1)
    return torch.log1p(others) + spread / (1 + others)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_entropy_equals_its_masked_form_bit_for_bit(layout: str) -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 13, 40, 64) * torch.tensor([0.01, 1.0, 8.0, 60.0]).repeat_interleave(10).view(1, 1, 40, 1)
    logits[0, :, 0, :] = logits[0, 3:4, 0, :]  # every class tied
    logits[0, 5, 1, :8] = float("-inf")
    logits[0, :12, 2, :8] = float("-inf")  # one finite class: entropy 0
    logits[1, 0, 3, :8] = float("inf")
    logits[1, :2, 4, :8] = float("inf")  # two tied +inf: nan in both
    logits[1, 7, 5, :8] = float("nan")
    logits[1, :, 6, :8] = -200.0
    logits[1, 0, 6, :8] = 0.0  # the others underflow to 0
    if layout == "channels_last":  # what a network's logits can look like (and the eval's: SMP's upsampling)
        logits = logits.contiguous(memory_format=torch.channels_last)
    got, want = Entropy().score(logits, None), _entropy_with_masked_terms(logits)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    same = ~torch.isnan(want)
    assert torch.equal(got[same].view(torch.int32), want[same].view(torch.int32))  # bits, signs of zero included


def test_energy_at_temperature_one_is_the_negated_logsumexp() -> None:
    logits = torch.randn(1, 13, 8, 64) * 9
    assert torch.equal(Energy().score(logits, None), -1.0 * torch.logsumexp(logits / 1.0, dim=1))
    assert torch.equal(Energy(2.0).score(logits, None), -2.0 * torch.logsumexp(logits / 2.0, dim=1))


@pytest.mark.parametrize("cls", [MSP, Entropy, Energy])
def test_banded_scoring_equals_one_pass(cls: type[Scorer], monkeypatch) -> None:
    """Pixelwise scorers run on bands of rows on the CPU (hazardseg.maps.in_bands): bit for bit the one-pass values
    at a width that is a multiple of 64 (every benchmark's), across band edges, the images of a batch and
    non-finite logits; within float32 rounding at any other width."""
    import hazardseg.maps as maps

    scorer = cls()
    for width, exact in ((64, True), (7, False)):
        logits = torch.randn(2, 5, 11, width) * 6
        logits[0, :, 4, 3] = float("-inf")
        logits[1, 2, 9, 1] = float("inf")
        one_pass = scorer.score(logits, None).float()
        monkeypatch.setattr(maps, "BAND_ELEMENTS", 5 * width * 3)  # bands of a few rows
        banded = scorer(logits)
        monkeypatch.undo()
        tolerance = 0.0 if exact else 1e-6  # (an all -inf pixel is NaN in both)
        torch.testing.assert_close(banded, one_pass, rtol=tolerance, atol=tolerance, equal_nan=True)


def test_banded_scoring_is_exact_at_a_benchmark_size() -> None:
    """2048 x 1024 with 13 classes: several bands of the default size, the same bits as one pass."""
    logits = torch.randn(1, 13, 1024, 2048) * 4
    for scorer in (MSP(), Entropy()):
        assert torch.equal(scorer(logits), scorer.score(logits, None))


def test_in_bands_returns_every_output_and_runs_once_off_the_cpu_sized_input(monkeypatch) -> None:
    import hazardseg.maps as maps

    calls = []

    def fn(band: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(tuple(band.shape))
        return band.amax(1), band.argmax(1)

    x = torch.randn(2, 3, 40, 4)
    monkeypatch.setattr(maps, "BAND_ELEMENTS", 3 * 4 * 16)  # 16 rows of 4 = 64 pixels a band
    values, index = maps.in_bands(fn, x)
    assert torch.equal(values, x.amax(1)) and torch.equal(index, x.argmax(1)) and index.dtype == torch.int64
    assert calls == [(1, 3, 16, 4), (1, 3, 16, 4), (1, 3, 8, 4)] * 2
    calls.clear()
    monkeypatch.setattr(maps, "BAND_ELEMENTS", 3 * 4 * 20)  # 20 rows would not be a multiple of 64 pixels: 16
    maps.in_bands(fn, x[:1])
    assert calls == [(1, 3, 16, 4), (1, 3, 16, 4), (1, 3, 8, 4)]
    calls.clear()
    monkeypatch.setattr(maps, "BAND_ELEMENTS", 1 << 21)
    maps.in_bands(fn, x[:1])
    assert calls == [(1, 3, 40, 4)]  # fits one band: one call on the input as it is


def test_in_bands_hands_fn_the_same_rows_of_further_maps(monkeypatch) -> None:
    import hazardseg.maps as maps

    x, top = torch.randn(2, 3, 40, 4), torch.randn(2, 40, 4)
    monkeypatch.setattr(maps, "BAND_ELEMENTS", 3 * 4 * 16)  # bands of 16 rows

    def fn(band: Tensor, rows: Tensor) -> Tensor:
        assert band.shape[-2:] == rows.shape[-2:] and band.shape[0] == rows.shape[0] == 1
        return band.sum(1) + rows

    assert torch.equal(maps.in_bands(fn, x, top), x.sum(1) + top)


def test_sml_banded_standardisation_equals_one_pass(monkeypatch) -> None:
    import hazardseg.maps as maps

    sml = SML()
    sml.fit([{"logits": torch.randn(2, 4, 16, 16) * 3}])
    logits = torch.randn(1, 4, 48, 32) * 3
    whole = sml(logits)
    monkeypatch.setattr(maps, "BAND_ELEMENTS", 4 * 32 * 6)  # bands of 6 rows (192 pixels)
    assert torch.equal(sml(logits.clone()), whole)  # a copy: the frame's class_max is not reused


def test_class_max_is_computed_once_per_logits_and_shared_by_the_scorers(monkeypatch) -> None:
    """MaxLogit, entropy and SML take each pixel's max logit and class from one class_max of the frame's logits: the
    same maps as computing them on their own (bits, signs of zero included), one computation for all three, and a
    new one for other logits, a reshaped view of them or logits changed in place."""
    import hazardseg.scorers.base as base

    calls = []
    compute = torch.Tensor.max

    def counted(self, *args, **kwargs):
        if kwargs.get("dim", args[0] if args else None) == 1 and self.ndim == 4:
            calls.append(tuple(self.shape))
        return compute(self, *args, **kwargs)

    sml = SML()
    sml.fit([{"logits": torch.randn(2, 5, 16, 16) * 3}])
    logits = torch.randn(2, 5, 24, 64) * 4
    logits[0, :, 3, 7] = float("-inf")
    alone = {"maxlogit": -logits.clone().amax(dim=1), "entropy": Entropy().score(logits.clone(), None),
             "sml": sml(logits.clone())}
    monkeypatch.setattr(torch.Tensor, "max", counted)
    shared = {"maxlogit": MaxLogit()(logits), "entropy": Entropy()(logits), "sml": sml(logits)}
    assert len(calls) == 2  # one class_max for the three scorers (one band per image at this size)
    for name, want in alone.items():
        assert torch.equal(shared[name].view(torch.int32), want.view(torch.int32)), name
    calls.clear()
    MaxLogit()(logits[:, :, :12])  # a view: other pixels
    assert len(calls) == 2
    logits.mul_(2.0)  # changed in place: the scorers must not see stale maxima...
    base._CLASS_MAX.clear()  # ...which in-place edits cannot be told from (scorers never make them): forget
    assert torch.equal(MaxLogit()(logits), -logits.amax(dim=1))


def test_mahalanobis_chunks_give_the_same_values() -> None:
    """Feature vectors are scored in chunks (bounded temporaries): the chunk size changes no value."""
    torch.manual_seed(3)
    scorer = Mahalanobis()
    d = 32
    scorer.center, scorer.whitening = torch.randn(d), torch.randn(d, d) / d**0.5
    scorer.class_means, scorer.class_count = torch.randn(5, d), torch.ones(5, dtype=torch.long)
    outputs = {"logits": torch.randn(2, 5, 64, 96), "features": torch.randn(2, d, 16, 24), "feature_stride": 4}
    outputs["features"] = outputs["features"].contiguous(memory_format=torch.channels_last)
    scorer.chunk = 1 << 20
    whole = scorer(outputs)
    for chunk in (7, 64, 100, 1 << 14):
        scorer.chunk = chunk
        assert torch.equal(scorer(outputs), whole), chunk


def test_a_traced_banded_scorer_takes_any_size(monkeypatch) -> None:
    """export.py traces the scorer on a small example: bands must not be baked into the graph."""
    import hazardseg.maps as maps

    monkeypatch.setattr(maps, "BAND_ELEMENTS", 13 * 64 * 4)  # the example would be 8 bands
    scorer = Entropy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(lambda x: scorer(x), torch.randn(1, 13, 32, 64))
    other = torch.randn(2, 13, 48, 80)
    torch.testing.assert_close(traced(other), scorer.score(other, None))
