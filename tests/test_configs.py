"""Every option of every config group composes, and instantiates into the right object."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, TINY_DATA, TINY_M2F

GROUPS = ["data", "model", "loss", "scorer", "optim", "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def all_options() -> list[tuple[str, str]]:
    return [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", all_options())
def test_option_composes(make_cfg, group, option):
    cfg = make_cfg([f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.data._target_.startswith("hazardseg.data.")
    if group != "experiment":
        assert cfg[group] is not None


@pytest.mark.parametrize("option", options("model"))
def test_model_options_build_and_run(make_cfg, option):
    # per-pixel models with an extra head; mask-classification models (mask2former*) with their own criterion
    cfg = make_cfg([f"model={option}"] + ([] if option.startswith("mask2former") else ["loss=ce+aux"]))
    net = instantiate(cfg.model).eval()
    out = net(torch.randn(1, 3, 72, 128))
    assert out["logits"].shape == (1, cfg.data.num_classes, 72, 128)


@pytest.mark.parametrize("option", options("loss"))
def test_loss_options(make_cfg, option):
    mask_losses = ("mask2former", "rba", "mask2anomaly", "uno")  # train a mask-classification network
    cfg = make_cfg([f"loss={option}", *(TINY_M2F if option in mask_losses else ["model.decoder_channels=16"])])
    loss, net = instantiate(cfg.loss), instantiate(cfg.model).train()
    loss.check_outputs(net.output_names(training=True))  # every term reads an output the model produces
    if loss.needs_class_counts:  # class-balanced terms: the pipeline passes the training split's counts
        loss.set_class_counts(list(range(100, 100 + cfg.data.num_classes)))
    image, mask = torch.randn(2, 3, 64, 64), torch.randint(0, 13, (2, 64, 64))
    terms = loss(net(image), {"image": image, "mask": mask})
    assert torch.isfinite(terms["loss"]) and terms["loss"] > 0
    assert terms["loss"].item() == pytest.approx(sum(t.weight * terms[n].item() for n, t in loss.terms.items()), rel=1e-5)
    terms["loss"].backward()


@pytest.mark.parametrize("option", options("optim"))
def test_optim_options(make_cfg, option):
    from hazardseg.module import Segmenter
    from hazardseg.models import SegmentationNet

    cfg = make_cfg([f"optim={option}"])
    module = Segmenter(SegmentationNet(num_classes=3, decoder_channels=16), torch.nn.Identity(),
                       OmegaConf.to_container(cfg.optim, resolve=True), num_classes=3)
    # what a Trainer tells schedules over the whole run (null total_steps / total_iters)
    module._trainer = SimpleNamespace(estimated_stepping_batches=40, max_epochs=4)
    opt = module.configure_optimizers()
    group = opt["optimizer"].param_groups[0]
    # the configured LR: the start LR, or the peak of a one-cycle schedule (which starts at peak / div_factor)
    assert group.get("max_lr", group["lr"]) == pytest.approx(cfg.optim.optimizer.lr)
    assert opt["lr_scheduler"]["monitor"] == "val/miou"


def test_data_config_instantiates_tiny_synthetic(make_cfg):
    cfg = make_cfg(TINY_DATA)
    dm = instantiate(cfg.data)
    assert dm.num_classes == cfg.data.num_classes == 13
    assert dm.anomaly_index == 13


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_presets_build_their_model(make_cfg, option):
    """Presets need real data and downloaded weights to train; their network must still build."""

    offline = ["model.pretrained=null"] if "rba" in option else ["model.encoder_weights=null"]  # no download in tests
    cfg = make_cfg([f"experiment={option}", *offline])
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model).train()
    loss.check_outputs(net.output_names(training=True))
    out = net(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, cfg.data.num_classes, 64, 64)
    assert set(loss.required_outputs.values()) <= set(out)
