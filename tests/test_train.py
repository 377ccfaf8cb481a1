"""End-to-end: train / eval through the real configs on tiny synthetic StreetHazards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_DATA, TINY_TRAIN
from hazardseg.errors import ConfigError
from hazardseg.pipeline import evaluate, train


def build_net(model_cfg):
    from hazardseg.config import instantiate

    return instantiate(model_cfg, key="model")

ANOMALY = ["test/msp/aupr", "test/msp/auroc", "test/msp/fpr95"]


def test_fast_dev_run_train(make_cfg, tmp_path):
    cfg = make_cfg(TINY_DATA + ["trainer=debug", "logger=none", "scorer=[msp,maxlogit]"])
    results = train(cfg)
    assert results["status"] == "completed"
    metrics = results["metrics"]
    for key in ANOMALY + ["test/maxlogit/auroc", "test/miou", "test/pixel_acc"]:
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, key
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "completed" and saved["metrics"]["test/miou"] == metrics["test/miou"]
    assert [row["scorer"] for row in saved["scorers"]] == ["msp", "maxlogit"]
    assert (tmp_path / "run" / "scorers.csv").read_text().startswith("scorer,aupr,auroc,fpr95")


def test_train_then_eval_reproduces_test_metrics(make_cfg, capsys):
    train_results = train(make_cfg(TINY_DATA + TINY_TRAIN + ["scorer=[msp,sml]"], run="train"))
    ckpt = train_results["checkpoint"]
    assert ckpt.endswith("best.ckpt") and not train_results["reused_checkpoint"]
    (stats,) = list(Path(train_results["config"]["paths"]["model_store"], "scorer_stats").glob("sml-*.pt"))  # fitted once, cached
    assert "scorer 'sml': fitting statistics" in capsys.readouterr().out
    eval_args = ["scorer=[msp,sml]", "logger=none", "trainer.enable_progress_bar=false", "eval.fit_batches=2", f"ckpt_path={ckpt}"]
    eval_results = evaluate(make_cfg(eval_args, config_name="eval", run="eval"))
    assert f"scorer 'sml': reusing statistics {stats}" in capsys.readouterr().out
    for key in ["test/miou", "test/msp/aupr", "test/sml/aupr", "test/sml/fpr95", "test/msp/per_image/auroc"]:
        assert eval_results["metrics"][key] == pytest.approx(train_results["metrics"][key], abs=1e-6), key
    # A changed checkpoint (different SHA-256) invalidates the saved statistics: they are refitted.
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save(payload, ckpt)
    evaluate(make_cfg(eval_args, config_name="eval", run="eval2"))
    assert "scorer 'sml': fitting statistics" in capsys.readouterr().out


def test_scorer_change_reuses_trained_model(make_cfg, capsys):
    first = train(make_cfg(TINY_DATA + TINY_TRAIN + ["scorer=msp"], run="a"))
    ckpt = first["checkpoint"]
    mtime = __import__("os").path.getmtime(ckpt)
    second = train(make_cfg(TINY_DATA + TINY_TRAIN + ["scorer=energy"], run="b"))
    assert second["reused_checkpoint"] is True and second["checkpoint"] == ckpt
    assert second["train_hash"] == first["train_hash"]
    assert __import__("os").path.getmtime(ckpt) == mtime  # nothing was retrained or rewritten
    assert "reusing trained model" in capsys.readouterr().out
    assert second["metrics"]["test/miou"] == pytest.approx(first["metrics"]["test/miou"], abs=1e-6)
    forced = train(make_cfg(TINY_DATA + TINY_TRAIN + ["scorer=energy", "reuse=false"], run="c"))
    assert forced["reused_checkpoint"] is False
    changed = train(make_cfg(TINY_DATA + TINY_TRAIN + ["optim.optimizer.lr=1e-3"], run="d"))
    assert changed["train_hash"] != first["train_hash"] and changed["reused_checkpoint"] is False


def test_aux_head_changes_training_loss_and_is_absent_at_inference(make_cfg):
    from hydra.utils import instantiate

    cfg = make_cfg(["loss=ce+aux", "model.decoder_channels=32"])
    loss = instantiate(cfg.loss)
    loss.set_class_counts([1] * 13)  # class-balanced CE (the default) gets its counts from the pipeline
    assert loss.terms["aux"].weight == pytest.approx(0.4) and loss.required_outputs == {"ce": "logits", "aux": "aux"}
    torch.manual_seed(0)
    net = build_net(cfg.model)
    image, mask = torch.randn(2, 3, 64, 112), torch.randint(0, 13, (2, 64, 112))
    net.train()
    out = net(image)
    terms = loss(out, {"image": image, "mask": mask})
    assert out["aux"].shape == out["logits"].shape
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + 0.4 * terms["aux"].item(), rel=1e-5)
    assert terms["loss"].item() != pytest.approx(terms["ce"].item())
    net.eval()
    assert "aux" not in net(image)  # training-only head: inference never runs it
    plain = build_net(make_cfg(["loss=ce"]).model)
    assert not plain.heads and not any("heads." in k for k in plain.state_dict())


def test_loss_term_without_its_head_is_a_one_line_error(make_cfg):
    from hydra.utils import instantiate


    cfg = make_cfg(["loss=ce+aux", "model.decoder_channels=16", "~model.heads.aux"])
    with pytest.raises(ConfigError, match=r"loss.terms.aux reads the network output 'aux'.*model.heads.aux"):
        instantiate(cfg.loss).check_outputs(build_net(cfg.model).output_names(training=True))


def test_output_contract(make_cfg):
    """logits at input size, features with their stride, heads at input size (any input size)."""
    from hazardseg.models import features_to_input

    net = build_net(make_cfg(["loss=ce+aux", "model.decoder_channels=16"]).model).train()
    out = net(torch.randn(2, 3, 50, 70))  # not a multiple of the encoder stride
    assert out["logits"].shape == (2, 13, 50, 70) and out["aux"].shape == (2, 13, 50, 70)
    s = out["feature_stride"]
    assert s == 4 and out["features"].shape[-2:] == (64 // s, 80 // s)  # padded to 64x80
    assert features_to_input(out["features"][:, 0], s, (50, 70)).shape == (2, 50, 70)


@pytest.mark.parametrize("loss", ["ce", "void"])
def test_scored_outputs_keep_float32_resolution_under_mixed_precision(make_cfg, loss):
    """bf16-mixed (trainer=gpu, or a CPU run with precision=bf16-mixed): the logits and the scored heads come
    out in float32 with (nearly) as many distinct max logits as a float32 forward; bf16 logits would hold a
    few hundred values, i.e. MaxLogit/MSP maps full of ties."""
    net = build_net(make_cfg([f"loss={loss}", "model.decoder_channels=16"]).model).eval()
    x = torch.randn(2, 3, 64, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(x)
    assert mixed["features"].dtype == torch.bfloat16  # the network itself does run in bf16
    for name in ("logits", *(["void"] if loss == "void" else [])):
        assert mixed[name].dtype == torch.float32, name
        distinct = [out[name].amax(1).unique().numel() for out in (full, mixed)]
        assert distinct[1] > 0.9 * distinct[0] > 1000, (name, distinct)


def test_offline_imagenet_weights_fail_fast_with_fix(make_cfg, monkeypatch):
    import hazardseg.models.weights as weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "hub_reachable", lambda *a, **k: False)
    cfg = make_cfg(["model.encoder_weights=imagenet"])
    start = time.time()
    with pytest.raises(ConfigError) as err:
        build_net(cfg.model)
    assert time.time() - start < 5
    message = str(err.value)
    assert "model.encoder_weights=imagenet" in message and "encoder_weights=null" in message and ".pth" in message


def test_hub_probe_is_bounded():
    from hazardseg.models.weights import hub_reachable

    start = time.time()
    hub_reachable(timeout=1.0)
    assert time.time() - start < 5


def test_local_encoder_weights_file(make_cfg, tmp_path):
    cfg = make_cfg(["model.decoder_channels=32"])
    source = build_net(cfg.model)
    path = tmp_path / "resnet18_encoder.pth"
    state = {f"{k}": v for k, v in source.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)  # torchvision-style classifier keys are ignored
    torch.save(state, path)
    cfg.model.encoder_weights = str(path)
    loaded = build_net(cfg.model)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
    cfg.model.encoder_weights = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="missing.pth"):
        build_net(cfg.model)


def test_crop_padding_is_not_learned_as_a_class(make_cfg):
    """StreetHazards has no ignore label: zoom-out padding gets PAD_LABEL, which the loss skips."""
    from hydra.utils import instantiate

    from hazardseg.data.transforms import PAD_LABEL

    cfg = make_cfg(TINY_DATA + ["data.augment.scale=[0.5,0.6]", "loss.terms.ce.class_weights=null"])  # plain CE below
    dm = instantiate(cfg.data)
    assert dm.ignore_index is None
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    padded = batch["mask"] == PAD_LABEL
    assert padded.any() and not padded.all()
    loss = instantiate(cfg.loss)
    logits = torch.randn(*batch["mask"].shape[:1], 13, *batch["mask"].shape[1:])
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[~padded], batch["mask"][~padded])
    assert loss({"logits": logits}, batch)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_balanced_loss_and_one_cycle_schedule_take_their_values_from_the_run(make_cfg):
    """class_weights: inverse_sqrt comes from the TRAIN split's class report; OneCycleLR's total_steps and
    max_lr left null become this run's optimizer steps and parameter-group LRs."""
    from hazardseg.losses.cross_entropy import balanced_class_weights

    cfg = make_cfg(TINY_DATA + TINY_TRAIN + ["optim=adamw_onecycle", "loss.terms.ce.class_weights=inverse_sqrt",
                                             "trainer.max_epochs=2", "test_after_fit=false"])
    results = train(cfg)
    counts = results["class_distribution"]["train"]["counts"]
    assert results["class_weights"]["ce"] == pytest.approx(balanced_class_weights("inverse_sqrt", counts).tolist(), abs=1e-4)
    (last,) = list(Path(cfg.paths.model_store).glob("*/checkpoints/last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    (schedule,) = ckpt["lr_schedulers"]
    steps = 2 * (8 // 4)  # 2 epochs of 8 training images in batches of 4
    assert schedule["total_steps"] == steps and schedule["last_epoch"] == steps
    assert [g["max_lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [cfg.optim.optimizer.lr] * 2  # decoder, encoder
