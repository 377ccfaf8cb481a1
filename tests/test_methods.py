"""Trained anomaly methods: loss terms against their papers' reference code, their scorers, and each
method training on tiny data through the real configs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_DATA, TINY_TRAIN
from hazardseg.losses import OUTLIER_LABEL, CompositeLoss, CrossEntropy
from hazardseg.losses.base import IGNORE_LABEL
from hazardseg.losses.densehybrid import DatasetPosterior, OutlierLogLikelihood
from hazardseg.losses.energy import EnergyMargin
from hazardseg.losses.outlier_entropy import OutlierEntropy
from hazardseg.losses.pebal import AbstentionLoss, EnergySmoothness, EnergySparsity
from hazardseg.losses.void import VoidClass
from hazardseg.metrics import AnomalyMetrics
from hazardseg.scorers.densehybrid import DenseHybrid
from hazardseg.scorers.void import VoidProbability

# method option -> the scorer its paper uses (added by the loss option)
METHODS = {"meta_ood": "entropy", "energy_oe": "energy", "pebal": "energy", "void": "void", "densehybrid": "densehybrid"}
K = 5


def _toy(seed: int = 0, n: int = 2, h: int = 6, w: int = 7):
    """Random logits and a mask with known classes, a pasted outlier block and some ignored pixels."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, h, w, generator=gen) * 3
    mask = torch.randint(0, K, (n, h, w), generator=gen)
    mask[:, 1:4, 2:5] = OUTLIER_LABEL
    mask[0, 0, :3] = IGNORE_LABEL
    return logits, mask


# ---------------------------------------------------------------- loss terms: values
@pytest.mark.parametrize("normalize", ["pixels", "outliers"])
def test_outlier_entropy_is_the_uniform_cross_entropy_on_outliers(normalize):
    logits, mask = _toy()
    out, labelled = mask == OUTLIER_LABEL, mask != IGNORE_LABEL
    per_pixel = -(logits.log_softmax(1).sum(1)) / K  # -(1/K) sum_c log p_c
    expected = per_pixel[out].sum() / (out.sum() if normalize == "outliers" else labelled.sum())
    value = OutlierEntropy(normalize=normalize)({"logits": logits}, {"mask": mask})
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    # minimal (log K) exactly for a uniform prediction on outliers
    flat = OutlierEntropy(normalize="outliers")({"logits": torch.zeros_like(logits)}, {"mask": mask})
    assert flat.item() == pytest.approx(math.log(K), rel=1e-6)


def test_energy_margin_matches_liu_et_al_reference():
    logits, mask = _toy()
    m_in, m_out = -2.0, 1.0
    # wetliu/energy_ood CIFAR/train.py, per pixel
    energy = -torch.logsumexp(logits, 1)
    ec_in, ec_out = energy[(mask != OUTLIER_LABEL) & (mask != IGNORE_LABEL)], energy[mask == OUTLIER_LABEL]
    expected = F.relu(ec_in - m_in).pow(2).mean() + F.relu(m_out - ec_out).pow(2).mean()
    value = EnergyMargin(m_in=m_in, m_out=m_out)({"logits": logits}, {"mask": mask})
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ce_plus_void_is_the_k_plus_1_cross_entropy():
    logits, mask = _toy()
    void = torch.randn(2, 1, 6, 7) * 3
    terms = CompositeLoss({"ce": CrossEntropy(), "void": VoidClass()})
    got = terms({"logits": logits, "void": void}, {"mask": mask})
    labelled = mask != IGNORE_LABEL
    target = mask.masked_fill(mask == OUTLIER_LABEL, K)
    full = F.cross_entropy(torch.cat([logits, void], 1), target, ignore_index=IGNORE_LABEL, reduction="none")
    inl = labelled & (mask != OUTLIER_LABEL)
    # CE is a mean over inliers, void a mean over labelled pixels: reassemble the (K+1)-way CE sums.
    ce_sum = got["ce"] * inl.sum()
    void_sum = got["void"] * labelled.sum()
    assert (ce_sum + void_sum).item() == pytest.approx(full[labelled].sum().item(), rel=1e-5)


def _pebal_gambler(pred, targets, wrong_sample, ood_reg=0.1):
    """PEBAL code/losses.py::Gambler.forward, on CPU, K classes + 1 abstention channel."""
    from torchvision import transforms

    targets = targets.clone()
    k = pred.shape[1] - 1
    pred_prob = torch.softmax(pred, dim=1)
    true_pred, reservation = pred_prob[:, :-1, :, :], pred_prob[:, -1, :, :]
    reward = torch.logsumexp(pred[:, :-1, :, :], dim=1).pow(2)
    reward = transforms.GaussianBlur(7, sigma=1)(reward.unsqueeze(0)).squeeze(0)
    reservation = torch.div(reservation, reward)
    mask = targets == OUTLIER_LABEL
    if wrong_sample:
        boosted = torch.add(true_pred, reservation.unsqueeze(1))[mask.unsqueeze(1).repeat(1, k, 1, 1)]
        out = ood_reg * torch.clamp(boosted, min=1e-7).log()
        void_mask = targets == IGNORE_LABEL
        targets[void_mask] = 0
        targets[mask] = 0
        loss_in = torch.gather(true_pred, index=targets.unsqueeze(1), dim=1).squeeze(1) + reservation
        return -(loss_in[(~mask) & (~void_mask)].log().mean() + out.mean())
    void_mask = targets == IGNORE_LABEL
    targets[void_mask] = 0
    loss = torch.gather(true_pred, index=targets.unsqueeze(1), dim=1).squeeze(1) + reservation
    return -loss[~void_mask].log().mean()


def test_abstention_loss_matches_pebal_gambler():
    logits, mask = _toy(n=1, h=12, w=12)
    abstain = torch.randn(1, 1, 12, 12)
    expected = _pebal_gambler(torch.cat([logits, abstain], 1), mask, wrong_sample=True)
    value = AbstentionLoss(output="abstain")({"logits": logits, "abstain": abstain}, {"mask": mask})
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    clean = mask.masked_fill(mask == OUTLIER_LABEL, 1)  # an image without outliers: PEBAL's other branch
    expected = _pebal_gambler(torch.cat([logits, abstain], 1), clean, wrong_sample=False)
    value = AbstentionLoss(output="abstain")({"logits": logits, "abstain": abstain}, {"mask": clean})
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pebal_energy_terms_match_the_reference_energy_loss():
    """PEBAL code/losses.py::energy_loss = 0.5 * hinge + sparsity(5e-4) + smooth(3e-6), margins -12 / -6."""
    logits, mask = _toy()
    logits = logits * 3
    energy = -torch.logsumexp(logits, 1)
    ec_out, ec_in = energy[mask == OUTLIER_LABEL], energy[(mask != OUTLIER_LABEL) & (mask != IGNORE_LABEL)]
    arr2 = torch.zeros_like(energy)
    arr2[:, :-1, :], arr2[:, -1, :] = energy[:, 1:, :], energy[:, -1, :]
    new2 = torch.zeros_like(energy)
    new2[:, :, :-1], new2[:, :, -1] = energy[:, :, 1:], energy[:, :, -1]
    smooth = (torch.sum((arr2 - energy) ** 2) + torch.sum((new2 - energy) ** 2)) / 2
    expected = (0.5 * (F.relu(ec_in + 12).pow(2).mean() + F.relu(-6 - ec_out).pow(2).mean())
                + 5e-4 * torch.mean(torch.norm(ec_out, dim=0)) + 3e-6 * smooth)
    loss = CompositeLoss({"hinge": EnergyMargin(0.5, m_in=-12, m_out=-6), "sparsity": EnergySparsity(5e-4),
                          "smooth": EnergySmoothness(3e-6)})
    assert loss({"logits": logits}, {"mask": mask})["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_densehybrid_terms_match_the_reference():
    """matejgrcic/DenseHybrid semseg_negatives_joint_th.py: loss_ood and loss_th (2-way head = [0, h])."""
    logits, mask = _toy()
    head = torch.randn(2, 1, 6, 7)
    label_ood = (mask == OUTLIER_LABEL).long()
    lse = torch.logsumexp(logits, 1) * label_ood
    loss_ood = lse.sum() / label_ood[label_ood == 1].numel()
    labelled = mask != IGNORE_LABEL  # deviation: ignore pixels are left out of the posterior's BCE
    two_way = torch.cat([torch.zeros_like(head), head], 1)
    loss_th = F.nll_loss(F.log_softmax(two_way, 1).permute(0, 2, 3, 1)[labelled], label_ood[labelled])
    outputs, batch = {"logits": logits, "ood": head}, {"mask": mask}
    assert OutlierLogLikelihood()(outputs, batch).item() == pytest.approx(loss_ood.item(), rel=1e-6)
    assert DatasetPosterior()(outputs, batch).item() == pytest.approx(loss_th.item(), rel=1e-6)


# ---------------------------------------------------------------- loss terms: where gradients go
OUTLIER_ONLY = [OutlierEntropy(), OutlierLogLikelihood(), EnergySparsity()]


@pytest.mark.parametrize("term", OUTLIER_ONLY, ids=lambda t: type(t).__name__)
def test_outlier_terms_send_gradients_to_outlier_pixels_only(term):
    logits, mask = _toy()
    logits.requires_grad_(True)
    term({"logits": logits}, {"mask": mask}).backward()
    moved = logits.grad.abs().sum(1) > 0
    assert torch.equal(moved, mask == OUTLIER_LABEL)


def test_cross_entropy_ignores_outlier_and_ignored_pixels():
    logits, mask = _toy()
    logits.requires_grad_(True)
    CrossEntropy()({"logits": logits}, {"mask": mask}).backward()
    moved = logits.grad.abs().sum(1) > 0
    assert torch.equal(moved, (mask != OUTLIER_LABEL) & (mask != IGNORE_LABEL))


def test_terms_without_outliers_in_the_batch_stay_finite_and_differentiable():
    logits, mask = _toy()
    mask = mask.masked_fill(mask == OUTLIER_LABEL, 0)
    logits.requires_grad_(True)
    head = torch.zeros(2, 1, 6, 7, requires_grad=True)
    outputs = {"logits": logits, "void": head, "ood": head, "abstain": head}
    for term in [*OUTLIER_ONLY, EnergyMargin(m_in=-2, m_out=1), VoidClass(), DatasetPosterior(), AbstentionLoss()]:
        value = term(outputs, {"mask": mask})
        assert torch.isfinite(value), type(term).__name__
        value.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(head.grad).all()


def test_null_term_drops_an_inherited_term(make_cfg):
    from hazardseg.config import instantiate

    loss = instantiate(make_cfg(["loss=pebal"]).loss, key="loss")
    assert "ce" not in loss.terms and {"abstention", "energy_margin", "energy_sparsity", "energy_smoothness"} <= set(loss.terms)


# ---------------------------------------------------------------- head scorers
def test_void_scorer_is_log_p_void_and_keeps_the_order_where_p_rounds_to_one():
    logits = torch.zeros(1, K, 1, 4)
    void = torch.tensor([-3.0, 0.0, 25.0, 40.0]).reshape(1, 1, 1, 4)
    score = VoidProbability()({"logits": logits, "void": void})
    expected = torch.log_softmax(torch.cat([logits, void], 1).double(), 1)[:, K]
    assert torch.allclose(score.double(), expected, atol=1e-6)
    p = torch.softmax(torch.cat([logits, void], 1), 1)[:, K]
    assert p[0, 0, 2] == p[0, 0, 3] == 1.0  # float32 probability ties the two most anomalous pixels
    assert score[0, 0, 2] < score[0, 0, 3]  # log space keeps them ordered


def test_densehybrid_scorer_formula():
    logits, head = torch.randn(2, K, 3, 4), torch.randn(2, 1, 3, 4)
    two_way = torch.cat([torch.zeros_like(head), head], 1)
    expected = -torch.logsumexp(logits, 1) + torch.softmax(two_way, 1)[:, 1].log()
    assert torch.allclose(DenseHybrid()({"logits": logits, "ood": head}), expected, atol=1e-5)


def test_head_scorers_are_skipped_for_models_without_their_head(make_cfg, capsys):
    from hazardseg.config import instantiate
    from hazardseg.scorers import applicable_scorers
    from hazardseg.scorers import build_scorers

    net = instantiate(make_cfg(["model.decoder_channels=16"]).model, key="model")
    scorers = applicable_scorers(build_scorers(make_cfg(["scorer=all"]).scorer), net)
    assert "void" not in scorers and "densehybrid" not in scorers and {"msp", "mahalanobis", "sml"} <= set(scorers)
    assert "scorer 'void' skipped" in capsys.readouterr().out
    void_net = instantiate(make_cfg(["loss=void", "model.decoder_channels=16"]).model, key="model")
    assert "void" in applicable_scorers(build_scorers(make_cfg(["scorer=all"]).scorer), void_net)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize("method", METHODS)
def test_loss_option_alone_switches_on_pasting_and_its_scorer(make_cfg, method):
    from hazardseg.config import instantiate

    cfg = make_cfg([f"loss={method}"])
    assert cfg.data.outliers.enabled is True and METHODS[method] in cfg.scorer and "msp" in cfg.scorer
    assert instantiate(cfg.loss, key="loss").uses_outliers
    assert make_cfg(["loss=ce"], run="ce").data.outliers.enabled is False


def test_outlier_method_whose_cutouts_never_label_a_pixel_stops_after_the_first_batches(make_cfg, tmp_path):
    # Cut-outs at alpha 100/255: pasted (the image changes) but below the labelling threshold (0.5), so no pixel
    # is ever an outlier. The config looks fine; the training sees it within a few batches and stops in one line.
    import numpy as np
    from PIL import Image

    from hazardseg.errors import ConfigError
    from hazardseg.pipeline import train

    folder = tmp_path / "faint"
    folder.mkdir()
    for i in range(2):
        rgba = np.full((12, 12, 4), 200, np.uint8)
        rgba[..., 3] = 100
        Image.fromarray(rgba, "RGBA").save(folder / f"{i}.png")
    cfg = make_cfg([*TINY_DATA, *TINY_TRAIN, "loss=meta_ood", "data/outliers=folder", "data.outliers.enabled=true",
                    f"data.outliers.root={folder}", "data.outliers.probability=1.0", "trainer.max_epochs=3", "scorer=msp"])
    with pytest.raises(ConfigError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("data.outliers: no pasted outlier pixel in 1 training batch(es)")
    assert "loss.terms.outlier_entropy learns from them" in msg and "alpha must reach the labelling threshold" in msg
    # the same folder with opaque cut-outs trains
    for i in range(2):
        Image.fromarray(np.full((12, 12, 4), 255, np.uint8), "RGBA").save(folder / f"{i}.png")
    assert train(make_cfg([*TINY_DATA, *TINY_TRAIN, "loss=meta_ood", "data/outliers=folder", "data.outliers.enabled=true",
                           f"data.outliers.root={folder}", "scorer=msp"], run="ok"))["status"] == "completed"


def test_outlier_terms_without_pasting_are_a_one_line_error(make_cfg):
    from hazardseg.errors import ConfigError
    from hazardseg.pipeline import train

    with pytest.raises(ConfigError, match=r"loss.terms.void learns from pasted outlier pixels.*data.outliers.enabled=true"):
        train(make_cfg(TINY_DATA + ["loss=void", "data.outliers.enabled=false", "trainer=debug", "logger=none"]))


# ---------------------------------------------------------------- training: each method learns its job
def _auroc(scores: torch.Tensor, is_outlier: torch.Tensor) -> float:
    metric = AnomalyMetrics()
    metric.update(scores, is_outlier)
    return float(metric.compute()["auroc"])


class ToyNet(torch.nn.Module):
    """A per-pixel MLP with the network output contract: logits, features (stride 1) and the configured
    heads, built exactly as SegmentationNet builds them (``head.build(feature_channels, K)``)."""

    def __init__(self, heads, classes: int, width: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 1), torch.nn.ReLU(), torch.nn.Conv2d(width, width, 1), torch.nn.ReLU())
        self.classifier = torch.nn.Conv2d(width, classes, 1)
        self.heads = torch.nn.ModuleDict(dict(heads))
        for head in self.heads.values():
            head.build(width, classes)

    def forward(self, image):
        features = self.body(image)
        return {"logits": self.classifier(features), "features": features, "feature_stride": 1,
                **{name: head(features) for name, head in self.heads.items()}}


def _toy_scene(gen: torch.Generator, classes: int, size: int = 24):
    """Pixels of class c are noisy copies of colour c; a square of pasted outlier pixels has colours drawn
    from a region of colour space no class uses."""
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])[:classes]
    mask = torch.randint(0, classes, (1, size, size), generator=gen)
    image = colours[mask].permute(0, 3, 1, 2) + 0.3 * torch.randn(1, 3, size, size, generator=gen)
    top, left = torch.randint(0, size - 8, (2,), generator=gen).tolist()
    outlier = torch.tensor([-1.0, 1, 1]) + 0.5 * torch.rand(3, generator=gen) - 0.25
    image[0, :, top:top + 8, left:left + 8] = outlier[:, None, None] + 0.3 * torch.randn(3, 8, 8, generator=gen)
    mask[0, top:top + 8, left:left + 8] = OUTLIER_LABEL
    return image, mask


@pytest.fixture
def one_thread():
    # Tiny per-pixel ops: intra-op threads only add contention (10x slower with 2 threads on a busy 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", METHODS)
def test_method_learns_to_flag_pasted_outliers(make_cfg, method, one_thread):
    """Train the method's configured loss terms and heads on toy scenes with pasted outliers: its own
    scorer must then rank the outlier pixels of *new* scenes above the known-class pixels."""
    from hazardseg.config import instantiate
    from hazardseg.scorers import build_scorers

    cfg = make_cfg([f"loss={method}"])
    loss = instantiate(cfg.loss, key="loss")
    loss.set_class_counts([1] * 4)  # class-balanced CE (the default): uniform here, the pipeline uses the train split's
    torch.manual_seed(0)
    net = ToyNet(instantiate(cfg.model.heads, key="model.heads"), classes=4)
    scorer = build_scorers(cfg.scorer)[METHODS[method]]
    gen = torch.Generator().manual_seed(0)
    test_image, test_mask = _toy_scene(gen, 4)

    def auroc() -> float:
        with torch.no_grad():
            return _auroc(scorer(net(test_image)).flatten(), (test_mask == OUTLIER_LABEL).flatten())

    before = auroc()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        image, mask = _toy_scene(gen, 4)
        optimizer.zero_grad()
        loss(net(image), {"image": image, "mask": mask})["loss"].backward()
        optimizer.step()
    after = auroc()
    assert after > 0.95 and after > before + 0.2, (before, after)


# ---------------------------------------------------------------- Mahalanobis
def _feature_batches(seed: int = 0, n: int = 3, d: int = 6, classes: int = 4):
    """Features at stride 2 whose class-c cells are centred on 3 * e_c, with masks labelling whole 2x2 blocks."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        labels = torch.randint(0, classes, (2, 4, 5), generator=gen)
        features = torch.randn(2, d, 4, 5, generator=gen) + 3 * F.one_hot(labels, d).permute(0, 3, 1, 2).float()
        mask = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)  # pure 2x2 blocks (padding: tested below)
        batches.append({"logits": torch.randn(2, classes, 8, 10), "features": features, "feature_stride": 2, "mask": mask})
    return batches


def _direct_mahalanobis(batches, classes: int = 4):
    f = torch.cat([b["features"].permute(0, 2, 3, 1).reshape(-1, b["features"].shape[1]) for b in batches]).double()
    y = torch.cat([b["mask"][:, ::2, ::2].reshape(-1) for b in batches])  # every 2x2 block is pure
    means = torch.stack([f[y == c].mean(0) for c in range(classes)])
    centred = f - means[y]
    cov = centred.T @ centred / len(f)
    return means, cov


def test_mahalanobis_fit_and_score_match_direct_computation():
    from hazardseg.scorers.mahalanobis import Mahalanobis

    batches = _feature_batches()
    scorer = Mahalanobis(ridge=0.0).fit(batches)
    means, cov = _direct_mahalanobis(batches)
    precision = torch.linalg.inv(cov)
    b = batches[0]
    f = b["features"].permute(0, 2, 3, 1).double()  # (N, h, w, D)
    diff = f[..., None, :] - means  # (N, h, w, K, D)
    d2 = torch.einsum("nhwkd,de,nhwke->nhwk", diff, precision, diff).amin(-1)
    from hazardseg.models import features_to_input

    expected = features_to_input(d2.float(), 2, (8, 10))
    assert torch.allclose(scorer(b), expected, rtol=1e-4, atol=1e-4)
    assert scorer.class_count.tolist() == [int((torch.cat([x["mask"][:, ::2, ::2] for x in batches]) == c).sum()) for c in range(4)]


def test_mahalanobis_streaming_reduce_and_state_dict_roundtrip(tmp_path):
    from hazardseg.scorers.mahalanobis import Mahalanobis

    batches = _feature_batches()
    streamed = Mahalanobis().fit(batches)
    one = {k: torch.cat([b[k] for b in batches]) if k != "feature_stride" else 2 for k in batches[0]}
    single = Mahalanobis().fit([one])
    doubled = Mahalanobis().fit(batches, reduce=lambda t: 2 * t)  # two identical "ranks": same statistics
    for other in (single, doubled):
        assert torch.allclose(streamed(batches[1]), other(batches[1]), rtol=1e-5, atol=1e-5)
    torch.save(streamed.state_dict(), tmp_path / "stats.pt")
    loaded = Mahalanobis()
    assert not loaded.is_fitted
    loaded.load_state_dict(torch.load(tmp_path / "stats.pt", weights_only=True))
    assert torch.equal(loaded(batches[2]), streamed(batches[2]))


def test_mahalanobis_majority_labels_skip_outlier_and_ignore_cells():
    from hazardseg.scorers.mahalanobis import _majority_labels

    mask = torch.tensor([[[1, 1, 2, 2, 0, 0],
                          [1, 3, 2, 254, 0, 0],
                          [255, 255, 4, 4, 254, 254],
                          [255, 1, 4, 0, 254, 0]]])
    assert _majority_labels(mask, 2, (2, 3)).tolist() == [[[1, 2, 0], [255, 4, 254]]]
    # padding (to the network's padded size) is not a class; a 2-2 tie goes to the class
    assert _majority_labels(mask[:, :3, :5], 2, (2, 3)).tolist() == [[[1, 2, 0], [255, 4, 255]]]


def test_mahalanobis_warns_for_unseen_classes_and_ranks_far_features_higher():
    from hazardseg.scorers.mahalanobis import Mahalanobis

    batches = _feature_batches()
    for b in batches:
        b["mask"] = b["mask"].masked_fill(b["mask"] == 3, 255)
    with pytest.warns(RuntimeWarning, match=r"classes \[3\]"):
        scorer = Mahalanobis().fit(batches)
    near = {**batches[0], "features": torch.zeros(1, 6, 4, 5) + 3 * F.one_hot(torch.tensor(0), 6).view(1, 6, 1, 1),
            "logits": torch.zeros(1, 4, 8, 10)}
    far = {**near, "features": near["features"] + 10}
    assert (scorer(far) > scorer(near)).all()


# ---------------------------------------------------------------- end to end: every method x every scorer
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_end_to_end_and_every_scorer_evaluates_it(make_cfg, method):
    from hazardseg.pipeline import train

    results = train(make_cfg(TINY_DATA + [f"loss={method}", "trainer=debug", "logger=none", "scorer=all",
                                          "model.decoder_channels=16", "eval.panels=1"]))
    rows = {row["scorer"]: row for row in results["scorers"]}
    own_head = {"void": "void", "densehybrid": "densehybrid"}.get(method)
    expected = {"msp", "maxlogit", "entropy", "energy", "sml", "mahalanobis"} | ({own_head} if own_head else set())
    assert set(rows) == expected  # head scorers of other methods are skipped, not failed
    for name, row in rows.items():
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["aupr"] <= 1.0, name
    assert "train/loss" not in results["metrics"] or math.isfinite(results["metrics"]["train/loss"])


def _write_cutouts(folder, n: int = 3) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgba = np.zeros((20, 16, 4), np.uint8)
        rgba[2:18, 3:13] = (40 * i, 200, 90, 255)
        Image.fromarray(rgba, "RGBA").save(folder / f"object_{i}.png")


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    """A tiny StreetHazards-format folder (train/ + test/, odgt indexes) and a tiny cut-out folder."""
    from hazardseg.data.synthetic import generate_streethazards

    root = tmp_path_factory.mktemp("release")
    data = generate_streethazards(root / "StreetHazards", n_train=4, n_val=2, n_test=2, width=128, height=72)
    _write_cutouts(root / "cutouts")
    return data, root / "cutouts"


PRESETS = ["streethazards_ce", "streethazards_mahalanobis", *(f"streethazards_{m}" for m in METHODS)]


@pytest.mark.parametrize("preset", PRESETS)
def test_streethazards_presets_run_with_cutouts(make_cfg, tiny_release, preset):
    """The GPU recipes, composed as written and smoke-run on CPU (no ImageNet download, tiny images)."""
    from hazardseg.pipeline import train

    data, cutouts = tiny_release
    cfg = make_cfg([f"experiment={preset}", "model.encoder_weights=null", "trainer=debug", "logger=none",
                    f"data.root={data}", f"data.outliers.root={cutouts}", "data.image_size=[64,64]", "data.batch_size=2",
                    "data.num_workers=0", "model.decoder_channels=16", "eval.panels=0", "eval.class_distribution=false"])
    assert cfg.trainer.accelerator == "cpu" and cfg.model.encoder_name == "resnet50"
    method = preset.removeprefix("streethazards_")
    assert cfg.data.outliers.enabled is (method in METHODS)
    default_scorer = METHODS.get(method, "mahalanobis" if method == "mahalanobis" else "msp")
    assert default_scorer in cfg.scorer
    results = train(cfg)
    assert results["status"] == "completed" and default_scorer in {row["scorer"] for row in results["scorers"]}


def test_sweep_report_lists_method_x_scorer(tmp_path):
    """The multirun callback writes one row per job x scorer; the method is the job's `loss` override column."""
    import csv
    import json

    from omegaconf import OmegaConf

    from hazardseg.sweep import SweepReport

    for job, (loss, scorers) in enumerate([("ce", ["msp", "mahalanobis"]), ("void", ["void", "msp"])]):
        job_dir = tmp_path / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n- scorer=all\n")
        rows = [{"scorer": s, "aupr": 0.1 * (i + 1), "auroc": 0.8, "fpr95": 0.5, "test_miou": 0.4} for i, s in enumerate(scorers)]
        (job_dir / "results.json").write_text(json.dumps({"status": "completed", "scorers": rows, "metrics": {}}))
    (tmp_path / "2").mkdir()  # a job that never wrote results: listed as missing
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    table = list(csv.DictReader((tmp_path / "sweep_report.csv").open()))
    assert [(r["loss"], r["scorer"], r["status"]) for r in table] == [
        ("ce", "msp", "completed"), ("ce", "mahalanobis", "completed"), ("void", "void", "completed"),
        ("void", "msp", "completed"), ("", "", "missing")]
    assert float(table[2]["aupr"]) == pytest.approx(0.1) and float(table[3]["aupr"]) == pytest.approx(0.2)
    assert "void" in (tmp_path / "sweep_report.md").read_text()
