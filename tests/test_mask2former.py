"""Mask-classification networks (Mask2Former from transformers), their output contract, criterion, scorers,
pretrained loading, and fine-tuning (init_from + trainable) for both network families."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TINY_DATA, TINY_M2F, compose_config
from hazardseg.errors import ConfigError
from hazardseg.models import outputs as contract
from hazardseg.models.outputs import masks_to_input, query_weighted_sum, semantic_scores

pytest.importorskip("transformers")

TINY_RUN = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none", "eval.fit_batches=2", "eval.panels=0",
            "eval.class_distribution=false"]
TINY_CONFIG = dict(backbone_config={"model_type": "timm_backbone", "backbone": "resnet10t", "out_indices": [1, 2, 3, 4]},
                   num_queries=6, hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_layers=1, encoder_feedforward_dim=64,
                   decoder_layers=3, dim_feedforward=64, num_attention_heads=2)


def tiny_net(**kwargs):
    from hazardseg.models import Mask2FormerNet

    torch.manual_seed(0)
    return Mask2FormerNet(num_classes=5, config=TINY_CONFIG, **kwargs)


def reference_semantic(class_logits, mask_logits, size, k):
    """The formula as written in the issue / Mask2Former's semantic_inference, in one piece (float64)."""
    masks = F.interpolate(mask_logits.double(), size=size, mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("nqc,nqhw->nchw", class_logits.double().softmax(-1)[..., :k], masks)


# ---------------------------------------------------------------------------- output contract
def test_semantic_scores_in_query_chunks_equal_the_formula(monkeypatch):
    torch.manual_seed(0)
    cls, masks = torch.randn(2, 7, 6), torch.randn(2, 7, 9, 16)
    expected = reference_semantic(cls, masks, (36, 64), 4)
    monkeypatch.setattr(contract, "QUERY_CHUNK_ELEMENTS", 2 * 2 * 36 * 64)  # 2 queries per chunk: 4 chunks
    seen = []
    real = contract.masks_to_input
    monkeypatch.setattr(contract, "masks_to_input", lambda m, s: seen.append(m.shape[1]) or real(m, s))
    got = semantic_scores(cls, masks, (36, 64), 4)
    assert seen == [2, 2, 2, 1]  # never all 7 queries at input size at once
    torch.testing.assert_close(got.double(), expected, atol=2e-6, rtol=1e-5)


def test_100_queries_at_1024x2048_are_never_one_tensor(monkeypatch):
    """The default chunk bound: 8 queries (64 MB) at a time for a 1024x2048 frame, not 100 (800 MB)."""
    sizes = []
    real = contract.masks_to_input
    monkeypatch.setattr(contract, "masks_to_input", lambda m, s: sizes.append(m.shape[1]) or real(m, s))
    cls, masks = torch.randn(1, 100, 20), torch.randn(1, 100, 256, 512)
    out = semantic_scores(cls, masks, (1024, 2048), 19)
    assert out.shape == (1, 19, 1024, 2048) and max(sizes) * 1024 * 2048 * 4 <= 64 * 2**20 and sum(sizes) == 100


def test_mask_resolution_comes_from_the_shapes():
    masks = torch.randn(1, 3, 46, 80)
    assert masks_to_input(masks, (46, 80)) is masks  # already at input size: untouched
    torch.testing.assert_close(masks_to_input(masks, (184, 320)), F.interpolate(masks, size=(184, 320), mode="bilinear"))
    # a padded input (181 rows -> 184 padded, stride 4, ceil(181/4) = 46 mask rows): upsample x4 then crop
    torch.testing.assert_close(masks_to_input(masks, (181, 320)), F.interpolate(masks, scale_factor=4, mode="bilinear")[..., :181, :])


def test_network_follows_the_output_contract_at_any_input_size():
    net = tiny_net().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 90, 150))  # not a multiple of 32: padded, cropped back
    assert out["logits"].shape == (2, 5, 90, 150)
    assert out["class_logits"].shape == (2, 6, 6) and out["mask_logits"].shape == (2, 6, 23, 38)
    assert out["features"].shape[-2:] == (23, 38) and out["feature_stride"] == 4
    assert set(out) == net.output_names(training=False)
    # logits ARE s: recomputed from the query outputs with the padding-aware upsampling
    masks = F.interpolate(out["mask_logits"], scale_factor=4, mode="bilinear")[..., :90, :150].sigmoid()
    s = torch.einsum("nqc,nqhw->nchw", out["class_logits"].softmax(-1)[..., :5], masks)
    torch.testing.assert_close(out["logits"], s, atol=1e-5, rtol=1e-5)
    net.train()
    train_out = net(torch.randn(2, 3, 64, 96))
    assert len(train_out["query_aux"]) == 2 and set(train_out) == net.output_names(training=True)


# ---------------------------------------------------------------------------- criterion
def test_set_loss_is_transformers_own_on_targets_built_from_semantic_masks():
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    from hazardseg.losses.mask_classification import MaskClassificationLoss

    net = tiny_net().train()
    out = net(torch.randn(2, 3, 64, 96))
    target = torch.randint(0, 5, (2, 64, 96))
    target[0, :10] = 255
    target[1, 20:30, 20:40] = 254
    term = MaskClassificationLoss(num_points=500)
    masks, classes = term.targets(target, None)
    for m, c, t in zip(masks, classes, target):
        assert set(c.tolist()) == set(t.unique().tolist()) - {254, 255}
        assert ((m.sum(0) == 0) == ((t == 255) | (t == 254))).all()  # ignored and outlier pixels: in no mask
    torch.manual_seed(3)
    ours = term(out, {"mask": target})
    hf = net.hf.config
    hf.train_num_points = 500
    reference = Mask2FormerLoss(hf, {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    aux = [{"masks_queries_logits": a["mask_logits"], "class_queries_logits": a["class_logits"]} for a in out["query_aux"]]
    torch.manual_seed(3)  # the same point sampling
    terms = reference(out["mask_logits"], out["class_logits"], masks, classes, aux)
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    expected = sum(weights[next(k for k in weights if n.startswith(k))] * v for n, v in terms.items())
    torch.testing.assert_close(ours, expected)
    ours.backward()
    assert net.hf.class_predictor.weight.grad.abs().sum() > 0


def test_outliers_as_the_negative_class():
    from hazardseg.losses.mask_classification import MaskClassificationLoss

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :2] = 254
    masks, classes = MaskClassificationLoss(outliers="negative").targets(target, negative_class=5)
    assert classes[0].tolist() == [0, 5] and masks[0][1].sum() == 16


def test_rba_outlier_loss_as_written_in_the_official_criterion():
    from hazardseg.losses.rba import RbAOutlierLoss

    torch.manual_seed(0)
    cls = torch.randn(2, 6, 6, requires_grad=True)
    masks = torch.randn(2, 6, 8, 12, requires_grad=True)
    target = torch.randint(0, 5, (2, 32, 48))
    target[0, :4] = 255
    target[1, 10:20, 10:20] = 254
    outputs = {"class_logits": cls, "mask_logits": masks}
    got = RbAOutlierLoss()(outputs, {"mask": target})
    # official: score at mask resolution, upsampled with align_corners=True; 0.5 * (in + out) with outliers
    s = torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks.sigmoid())
    score = F.interpolate((-s.tanh().sum(1))[:, None], size=(32, 48), mode="bilinear", align_corners=True)[:, 0]
    is_in = (target != 255) & (target != 254)
    expected = 0.5 * (F.relu(score[is_in] - 0.0).pow(2).mean() + F.relu(5.0 - score[target == 254]).pow(2).mean())
    torch.testing.assert_close(got, expected)
    # no outlier pixel: the inlier term alone, and it is inactive (score <= 0 = t_in): no gradient at all
    plain = RbAOutlierLoss()(outputs, {"mask": target.masked_fill(target == 254, 0)})
    assert plain.item() == 0.0


def test_mask_contrastive_loss_as_written_in_the_official_criterion():
    from hazardseg.losses.mask2anomaly import MaskContrastiveLoss

    torch.manual_seed(1)
    cls, masks = torch.randn(1, 6, 6), torch.randn(1, 6, 8, 12)
    target = torch.randint(0, 5, (1, 16, 24))
    target[0, :3] = 254
    got = MaskContrastiveLoss(margin=1.0)({"class_logits": cls, "mask_logits": masks}, {"mask": target})
    s = torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks.sigmoid())
    score = F.interpolate((-s.max(1).values)[:, None], size=(16, 24), mode="bilinear", align_corners=True)[:, 0]
    expected = 0.5 * (score[target < 254].pow(2).mean() + F.relu(1.0 - score[target == 254]).pow(2).mean())
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------- scorers
def test_query_scorers_match_their_formulas():
    from hazardseg.scorers.mask_classification import EAM, UNO, Mask2Anomaly, RbA

    torch.manual_seed(2)
    k, size = 5, (20, 36)
    cls, masks = torch.randn(2, 6, k + 2), torch.randn(2, 6, 5, 9)  # K known + negative + no object
    s = reference_semantic(cls, masks, size, k).float()
    outputs = {"logits": s, "class_logits": cls, "mask_logits": masks, "negative_class": k}
    m = F.interpolate(masks.double(), size=size, mode="bilinear", align_corners=False).sigmoid()
    p = cls.double().softmax(-1)
    torch.testing.assert_close(RbA()(outputs), -s.tanh().sum(1))
    torch.testing.assert_close(Mask2Anomaly()(outputs), 1 - s.max(1).values)
    eam = 1 - (m * p[..., :k].max(-1).values[..., None, None]).sum(1)
    torch.testing.assert_close(EAM()(outputs).double(), eam, atol=1e-5, rtol=1e-5)
    uno = -(m * (p[..., :k].max(-1).values - p[..., k])[..., None, None]).sum(1)
    torch.testing.assert_close(UNO()(outputs).double(), uno, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(query_weighted_sum(p[..., 0].float(), masks, size).double(), (m * p[..., 0, None, None]).sum(1),
                               atol=1e-5, rtol=1e-5)


def test_query_scorers_are_skipped_on_per_pixel_models_and_uno_without_a_negative_class(capsys):
    from hazardseg.models import SegmentationNet
    from hazardseg.scorers import applicable_scorers
    from hazardseg.scorers.mask_classification import EAM, UNO, RbA
    from hazardseg.scorers.softmax import MSP

    scorers = {"msp": MSP(), "rba": RbA(), "eam": EAM(), "uno": UNO()}
    per_pixel = SegmentationNet(num_classes=5, encoder_name="resnet18", decoder_channels=32)
    assert list(applicable_scorers(scorers, per_pixel)) == ["msp"]
    assert "scorer 'rba' skipped: it reads the network output 'class_logits'" in capsys.readouterr().out
    assert list(applicable_scorers(scorers, tiny_net())) == ["msp", "rba", "eam"]
    assert list(applicable_scorers(scorers, tiny_net(negative_class=True))) == ["msp", "rba", "eam", "uno"]


# ---------------------------------------------------------------------------- building, pretrained, errors
def test_pretrained_loads_a_save_pretrained_folder_and_checks_the_label_count(tmp_path):
    from hazardseg.models import Mask2FormerNet

    source = tiny_net()
    source.hf.save_pretrained(tmp_path / "m2f")
    loaded = Mask2FormerNet(num_classes=5, pretrained=str(tmp_path / "m2f"))
    for (name, a), b in zip(source.hf.state_dict().items(), loaded.hf.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match=r"model.pretrained=.*predicts 5 classes, but the data has 19"):
        Mask2FormerNet(num_classes=19, pretrained=str(tmp_path / "m2f"))
    with pytest.raises(ConfigError, match=r"model.pretrained=.*no such folder"):
        Mask2FormerNet(num_classes=5, pretrained=str(tmp_path / "missing"))


def test_pretrained_hub_id_offline_is_one_line_naming_the_cache_and_the_folder_fix(tmp_path, monkeypatch):
    from hazardseg.models import Mask2FormerNet, mask2former

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(mask2former, "hub_reachable", lambda: False)
    with pytest.raises(ConfigError) as err:
        Mask2FormerNet(num_classes=19, pretrained="facebook/mask2former-swin-base-cityscapes-semantic")
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.pretrained=facebook/")
    assert "unreachable" in message and "save_pretrained" in message and "model.pretrained=/path/to/m2f" in message


def test_without_transformers_model_mask2former_names_the_install_command(monkeypatch):
    from hazardseg.models import Mask2FormerNet

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r'model=mask2former needs Hugging Face transformers.*pip install -e "\.\[mask\]"'):
        Mask2FormerNet(num_classes=5, config=TINY_CONFIG)


@pytest.mark.parametrize("command, message", [
    (["model=mask2former", "loss=ce"], "error: loss=ce trains per-pixel logits only, but the model is a mask-classification network"),
    (["loss=rba"], "error: loss.terms.mask2former trains a mask-classification network (it reads 'class_logits'), but the model is a per-pixel network"),
    (["init_from=missing.ckpt"], "error: init_from=missing.ckpt: file not found"),
    (["model=mask2former", "loss=rba"], "error: trainable=['heads'] freezes the rest of the network, but nothing trained is loaded"),
])
def test_family_mismatches_are_one_line_errors(tmp_path, command, message):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *command, "trainer=debug", "logger=none", *TINY_DATA,
                             f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-1500:]


# ---------------------------------------------------------------------------- training and fine-tuning
@pytest.fixture(scope="module")
def trained_m2f(tmp_path_factory):
    """A tiny Mask2Former trained for one epoch through train(), as `python train.py model=mask2former` does."""
    from hazardseg.pipeline import train

    root = tmp_path_factory.mktemp("m2f")
    cfg = compose_config("train", TINY_DATA + TINY_M2F + TINY_RUN + ["scorer=all"], root / "run", root / "models")
    return train(cfg), root


def test_mask2former_trains_with_its_own_criterion_and_scores_every_family_scorer(trained_m2f):
    results, root = trained_m2f
    assert results["choices"]["loss"] == "mask2former" and results["checkpoint"].endswith("best.ckpt")
    scored = {row["scorer"]: row for row in results["scorers"]}  # uno skipped: no negative class
    assert {"msp", "sml", "mahalanobis", "rba", "mask2anomaly", "eam"} <= set(scored) and "uno" not in scored
    assert all(0.0 <= scored[name]["auroc"] <= 1.0 for name in ("rba", "eam")) and 0.0 <= results["metrics"]["test/miou"] <= 1.0


def _net_state(ckpt):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


@pytest.mark.parametrize("loss", ["rba", "uno"])
def test_fine_tune_from_a_trained_mask2former_trains_only_the_heads(trained_m2f, loss):
    from hazardseg.pipeline import train

    (results, root), ckpt = trained_m2f, trained_m2f[0]["checkpoint"]
    cfg = compose_config("train", TINY_DATA + TINY_M2F + TINY_RUN + [f"loss={loss}", f"init_from={ckpt}", "scorer=all"],
                         root / f"ft_{loss}", root / "models")
    tuned = train(cfg)
    assert tuned["init_from"] == ckpt and tuned["train_hash"] != results["train_hash"]
    before, after = _net_state(ckpt), _net_state(tuned["checkpoint"])
    heads = ("hf.class_predictor.", "hf.model.transformer_module.decoder.mask_predictor.mask_embedder.")
    changed = {k for k in after if not k.startswith(heads) and not torch.equal(before[k], after[k])}
    assert not changed  # frozen parts bit-identical, BatchNorm running statistics included
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(heads[1]))
    if loss == "uno":  # the classifier gained the negative row; known and no-object rows start from the trained ones
        assert after["hf.class_predictor.weight"].shape[0] == before["hf.class_predictor.weight"].shape[0] + 1
        assert "uno" in {row["scorer"] for row in tuned["scorers"]}
    else:
        assert "rba" in {row["scorer"] for row in tuned["scorers"]}


def test_meta_ood_fine_tunes_a_trained_deeplab_with_a_frozen_encoder(trained, tmp_path):
    """The same mechanism serves per-pixel methods: Meta-OoD from a trained DeepLabV3+, encoder frozen."""
    from conftest import TINY_TRAIN
    from hazardseg.pipeline import train

    ckpt = trained["checkpoint"]
    cfg = compose_config("train", TINY_DATA + TINY_TRAIN + ["loss=meta_ood", f"init_from={ckpt}", "trainable=[decoder,heads]",
                                                            "eval.panels=0"], tmp_path / "run", tmp_path / "models")
    tuned = train(cfg)
    before, after = _net_state(ckpt), _net_state(tuned["checkpoint"])
    encoder = [k for k in after if k.startswith("net.encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)  # running_mean / running_var too
    assert any("running_mean" in k for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("net.decoder."))
    # the init checkpoint's content is part of the model's identity: another init = another store entry
    plain = compose_config("train", TINY_DATA + TINY_TRAIN + ["loss=meta_ood", "trainable=[decoder,heads]"], tmp_path / "r2",
                           tmp_path / "models")
    from hazardseg.run.init import init_material
    from hazardseg.store import config_hash

    assert tuned["train_hash"] != config_hash(init_material(plain, None))


def test_init_from_adds_new_heads_and_refuses_another_network(trained, tmp_path, capsys):
    from conftest import TINY_TRAIN
    from hazardseg.pipeline import train
    from hazardseg.run.build import build_module
    from hazardseg.run.init import init_network

    ckpt = trained["checkpoint"]
    cfg = compose_config("train", TINY_DATA + TINY_TRAIN + ["loss=void"], tmp_path / "run",
                         tmp_path / "models")
    from hazardseg.config import instantiate

    module = build_module(cfg, cfg, instantiate(cfg.data), {"choices": {}})
    init_network(module.net, ckpt)
    assert "new, initialised: heads.void" in capsys.readouterr().out
    torch.testing.assert_close(module.net.net.encoder.state_dict(), {k.removeprefix("net.encoder."): v for k, v in
                                                                     _net_state(ckpt).items() if k.startswith("net.encoder.")})
    with pytest.raises(ConfigError, match=r"trainable: 'decodr' matches no parameter\. Fix: a group \(encoder, decoder, heads\)"):
        module.net.set_trainable(["decodr"])
    other = compose_config("train", TINY_DATA + TINY_TRAIN + ["model.decoder_channels=16"], tmp_path / "o", tmp_path / "models")
    module = build_module(other, other, instantiate(other.data), {"choices": {}})
    with pytest.raises(ConfigError, match=r"init_from=.*does not fit this one \(\d+ of other shape"):
        init_network(module.net, ckpt)


def test_families_sweep_preset_composes_with_its_fine_tunes_after_their_base_models(make_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+sweep=families"], return_hydra_config=True)
    order = cfg.hydra.sweeper.params.experiment.split(",")
    for tuned in ("families/meta_ood", "families/rba", "families/mask2anomaly", "families/uno"):
        preset = make_cfg([f"experiment={tuned}"])
        base = preset.init_from[0].split("=", 1)[1]
        assert order.index(base) < order.index(tuned)
    assert list(cfg.scorer) == ["msp", "maxlogit", "entropy", "energy", "sml", "mahalanobis", "void", "densehybrid", "rba",
                                "mask2anomaly", "eam", "uno"]


def test_rba_cityscapes_preset_fine_tunes_pretrained_weights_and_is_scored_on_smiyc(tmp_path):
    """experiment=rba_cityscapes as typed, on the genuine Cityscapes and SMIYC samples, with a tiny 19-class
    Mask2Former written by save_pretrained standing in for the hub weights and synthetic outliers for COCO."""
    import shutil

    from conftest import SAMPLES

    if not (SAMPLES / "cityscapes").is_dir() or not (SAMPLES / "smiyc" / "dataset_AnomalyTrack").is_dir():
        pytest.skip("genuine samples not present")
    from hazardseg.models import Mask2FormerNet

    city = tmp_path / "cityscapes"
    for part in ("leftImg8bit", "gtFine"):
        for split in ("train", "val"):
            shutil.copytree(SAMPLES / "cityscapes" / part / "val", city / part / split)
    torch.manual_seed(0)
    Mask2FormerNet(num_classes=19, config=TINY_CONFIG).hf.save_pretrained(tmp_path / "m2f_cityscapes")
    common = [f"paths.root_dir={tmp_path}", "logger=none", "data.num_workers=0"]
    train_cmd = ["experiment=rba_cityscapes", f"data.root={city}", f"model.pretrained={tmp_path / 'm2f_cityscapes'}",
                 "data/outliers=synthetic", "data.outliers.probability=1.0", "data.image_size=[64,128]", "data.batch_size=1",
                 "trainer=cpu", "trainer.max_steps=2", "loss.terms.mask2former.num_points=256", "eval.panels=0",
                 f"hydra.run.dir={tmp_path}/train", *common]
    run = subprocess.run([sys.executable, str(REPO / "train.py"), *train_cmd], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert results["choices"]["model"] == "mask2former_swin_b" and results["choices"]["loss"] == "rba"
    ckpt = results["checkpoint"]
    before = Mask2FormerNet(num_classes=19, pretrained=str(tmp_path / "m2f_cityscapes")).state_dict()
    after = _net_state(ckpt)
    frozen = [k for k in after if ".class_predictor." not in k and ".mask_embedder." not in k]
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # the pretrained network, untouched
    evaluate = ["eval.py", f"ckpt_path={ckpt}", "data=smiyc_anomaly", f"data.root={SAMPLES / 'smiyc' / 'dataset_AnomalyTrack'}",
                "data.image_size=[128,256]", "scorer=[rba,msp]", "trainer=debug", f"hydra.run.dir={tmp_path}/eval", *common]
    run = subprocess.run([sys.executable, str(REPO / evaluate[0]), *evaluate[1:]], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    scored = json.loads((tmp_path / "eval" / "results.json").read_text())["scorers"]
    assert [row["scorer"] for row in scored] == ["rba", "msp"]


def test_init_from_names_a_model_by_its_training_overrides(trained_m2f, tmp_path):
    """init_from=[experiment=...] finds the model that config trains in the store, with the job's other overrides
    (data, model, trainer, options of loss terms the model has) but not its method (loss, trainable)."""
    from hazardseg.pipeline import train

    (base_results, root) = trained_m2f
    common = TINY_DATA + TINY_M2F[1:] + TINY_RUN
    # the module fixture trained model=mask2former with `common`: experiment=families/mask2former names the same config
    cfg = compose_config("train", ["experiment=families/rba", *common, "loss.terms.rba.weight=2.0"], tmp_path / "ft", root / "models")
    tuned = train(cfg)
    assert tuned["init_from"] == base_results["checkpoint"]
    # a base that was never trained: one line with the command that trains it
    cfg = compose_config("train", ["experiment=families/rba", *common, "model.config.num_queries=4"], tmp_path / "ft2", root / "models")
    with pytest.raises(ConfigError, match=r"init_from=\[experiment=families/mask2former\]: that model \(store entry \w+\) is not "
                                          r"trained yet\. Fix: train it first \(python train\.py .*model\.config\.num_queries=4"):
        train(cfg)


def test_onnx_export_of_a_mask2former_is_refused_in_one_line_not_written(tmp_path):
    """transformers' Mask2Former traces with its example's size baked in: the export check catches it."""
    pytest.importorskip("onnxruntime")
    from hazardseg.export import export_onnx
    from hazardseg.scorers.mask_classification import RbA

    with pytest.raises(ConfigError, match=r"scorer=rba: the ONNX graph of this network does not follow the frame size "
                                          r"\(a \d+x\d+ frame gave \d+x\d+ maps"):
        export_onnx(tiny_net().eval(), RbA(), tmp_path / "m2f.onnx", {"scorer": "rba"})
    assert not (tmp_path / "m2f.onnx").exists()
