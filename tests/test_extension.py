"""What the README's Layout section promises: a new scorer, network family, dataset or benchmark is its module +
its YAML, a library loss term one YAML, nothing else. Each test adds a toy one from a temporary folder (a config search path + an importable
module outside the package), registered only through config, and runs it through train.py's code path."""

from __future__ import annotations

import textwrap

import pytest
import torch
from conftest import CONF, TINY_DATA, TINY_TRAIN
from hydra.utils import instantiate

from hazardseg.pipeline import evaluate, train

PLUGIN = '''
import torch
from torch import nn

from pathlib import Path

from hazardseg.data import AnomalyBenchmarkDataModule, Frame, Item, SegmentationDataModule, SegmentationDataset
from hazardseg.models import SegmentationNetwork
from hazardseg.scorers import Scorer


class DoubledMaxLogit(Scorer):
    """-2 * max logit: ranks every pixel exactly as MaxLogit does."""

    name = "doubled"

    def score(self, logits, features):
        return -2.0 * logits.amax(dim=1)


class Squashed(Scorer):
    """MaxLogit squeezed into [1, 1 + 1e-6]: a handful of float32 values, so the binned metrics lose their order."""

    name = "squashed"

    def score(self, logits, features):
        return 1.0 + 1e-6 * torch.sigmoid(-logits.amax(dim=1))


class TinyNet(SegmentationNetwork):
    """Two convolutions at full resolution: the network protocol and nothing else."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def output_names(self, training):
        return {"logits", "features", "feature_stride"}

    def param_groups(self):
        return {"encoder": list(self.body.parameters()), "decoder": [], "heads": list(self.classifier.parameters())}

    def forward(self, image):
        features = self.body(image)
        return {"logits": self.classifier(features), "features": features, "feature_stride": 1}


class StripesDataModule(SegmentationDataModule):
    """<root>/<split>/<name>.png images with <name>_mask.png labels 0 / 1 / 255 (ignore): the facts of the
    labels as class attributes, the files as one build_dataset."""

    name = "stripes"
    NUM_CLASSES = 2
    CLASS_NAMES = ("ground", "stripe")
    DEFAULT_IGNORE_INDEX = 255
    VOID_VALUE = 255
    DEFAULT_IMAGE_SIZE = (32, 48)

    def build_dataset(self, split):
        folder = self.root / split
        images = sorted(p for p in folder.glob("*.png") if not p.stem.endswith("_mask"))
        return SegmentationDataset([Item(p, p.with_name(p.stem + "_mask.png"), p.name) for p in images])


class CratersDataModule(AnomalyBenchmarkDataModule):
    """A test-only benchmark: <root>/frames/<fid>.png with <root>/labels/<fid>.png (0 / 1 / 255)."""

    name = "craters"
    DOWNLOAD_HINT = "set data.root to the craters folder"

    def build_frames(self):
        frames = [Frame(p, self.root / "labels" / p.name, p.stem, "Craters") for p in sorted((self.root / "frames").glob("*.png"))]
        return frames, {}
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A user's own folder: ``toy_plugin.py`` (the code) and ``conf/<group>/<option>.yaml`` (the registration)."""
    folder = tmp_path / "mine"
    (folder / "conf" / "scorer").mkdir(parents=True)
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "toy_plugin.py").write_text(PLUGIN)
    (folder / "conf" / "scorer" / "doubled.yaml").write_text("doubled:\n  _target_: toy_plugin.DoubledMaxLogit\n")
    (folder / "conf" / "scorer" / "squashed.yaml").write_text("squashed:\n  _target_: toy_plugin.Squashed\n")
    (folder / "conf" / "model" / "tiny.yaml").write_text(textwrap.dedent("""\
        _target_: toy_plugin.TinyNet
        num_classes: ${data.num_classes}
        width: 8
    """))
    (folder / "conf" / "data").mkdir(parents=True)
    (folder / "conf" / "data" / "stripes.yaml").write_text(textwrap.dedent("""\
        _target_: toy_plugin.StripesDataModule
        root: ???
        batch_size: 4
        num_classes: 2
        ignore_index: 255
    """))
    (folder / "conf" / "data" / "craters.yaml").write_text(textwrap.dedent("""\
        _target_: toy_plugin.CratersDataModule
        root: ???
        image_size: null
        batch_size: 1
        num_workers: 0
        ignore_index: 255
    """))
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _write_scenes(root, splits: dict[str, int], anomaly: bool = False) -> None:
    """Horizontal stripes (class 1) on ground (class 0); ``anomaly``: a bright square labelled 1, the rest 0,
    the image border 255 (benchmark labels)."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for split, count in splits.items():
        for i in range(count):
            label = np.zeros((32, 48), np.uint8)
            label[(np.arange(32) // 4 + i) % 3 == 0] = 1
            image = np.where(label[..., None] == 1, 200, 60).astype(np.uint8).repeat(3, 2) + rng.integers(0, 20, (32, 48, 3), dtype=np.uint8)
            if anomaly:
                label[:] = 0
                image[8:16, 10:20] = (250, 30, 250)
                label[8:16, 10:20] = 1
                label[0] = 255
                (root / "frames").mkdir(parents=True, exist_ok=True)
                (root / "labels").mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / "frames" / f"f{i}.png")
                Image.fromarray(label).save(root / "labels" / f"f{i}.png")
                continue
            label[0, :4] = 255
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / f"{i}.png")
            Image.fromarray(label).save(root / split / f"{i}_mask.png")


def _search(folder) -> str:
    return f"hydra.searchpath=[file://{folder / 'conf'}]"


def test_new_scorer_is_one_module_and_one_yaml(make_cfg, plugin_dir):
    results = train(make_cfg(TINY_DATA + TINY_TRAIN + [_search(plugin_dir), "scorer=[doubled,maxlogit]"]))
    metrics = results["metrics"]
    assert [row["scorer"] for row in results["scorers"]] == ["doubled", "maxlogit"]
    for key in ("aupr", "auroc", "fpr95"):  # the same ranking as MaxLogit: the same numbers, so it really scored
        assert metrics[f"test/doubled/{key}"] == pytest.approx(metrics[f"test/maxlogit/{key}"], abs=1e-9), key


def test_error_bounds_stand_beside_pooled_metrics_and_warn_when_large(make_cfg, plugin_dir, tmp_path, capsys):
    import json

    results = train(make_cfg(TINY_DATA + TINY_TRAIN + [_search(plugin_dir), "scorer=[maxlogit,squashed]"]))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    for name in ("maxlogit", "squashed"):
        for key in ("aupr", "auroc", "fpr95"):
            assert saved["metrics"][f"test/{name}/{key}_error_bound"] >= 0.0
    rows = {row["scorer"]: row for row in saved["scorers"]}
    assert rows["maxlogit"]["auroc_error_bound"] < 1e-4 < rows["squashed"]["auroc_error_bound"]
    out = capsys.readouterr().out
    assert out.count("binning error bound above 0.0001") == 1 and "scorer 'squashed'" in out
    assert (tmp_path / "run" / "scorers.csv").read_text().splitlines()[0].count("_error_bound") == 3
    assert results["metrics"]["test/squashed/auroc_error_bound"] == rows["squashed"]["auroc_error_bound"]


def test_new_network_family_is_one_module_and_one_yaml(make_cfg, plugin_dir):
    """A network that is no SMP model trains, is checkpointed, reused by the store and evaluated by eval.py."""
    common = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "logger=none", "eval.fit_batches=2"]
    cfg = make_cfg(TINY_DATA + common + [_search(plugin_dir), "model=tiny", "scorer=[msp,sml,mahalanobis]"], run="train")
    results = train(cfg)
    assert results["status"] == "completed" and results["checkpoint"].endswith(".ckpt")
    assert 0.0 <= results["metrics"]["test/miou"] <= 1.0
    assert {row["scorer"] for row in results["scorers"]} == {"msp", "sml", "mahalanobis"}
    evaluated = evaluate(make_cfg(["scorer=[msp,sml,mahalanobis]", "logger=none", "trainer.enable_progress_bar=false",
                                   "eval.fit_batches=2", f"ckpt_path={results['checkpoint']}"], config_name="eval", run="eval"))
    for key in ("test/miou", "test/msp/auroc", "test/sml/auroc", "test/mahalanobis/auroc"):
        assert evaluated["metrics"][key] == pytest.approx(results["metrics"][key], abs=1e-6), key


@pytest.mark.parametrize("option,term", [("ce+dice", "dice"), ("lovasz", "lovasz"), ("focal", "focal")])
def test_library_loss_terms_from_yaml_alone_train(make_cfg, option, term):
    """SMP's DiceLoss / LovaszLoss / FocalLoss as loss terms through YAML alone (conf/loss/<option>.yaml):
    they train (the loss falls on a fixed batch), and ignored and pasted-outlier pixels get no gradient."""
    assert (CONF / "loss" / f"{option}.yaml").is_file()
    cfg = make_cfg([f"loss={option}", "model.decoder_channels=16", "model.encoder_name=resnet18"])
    loss, net = instantiate(cfg.loss), instantiate(cfg.model).train()
    loss.check_outputs(net.output_names(training=True))
    if loss.needs_class_counts:
        loss.set_class_counts([100] * cfg.data.num_classes)
    torch.manual_seed(0)
    image = torch.randn(4, 3, 64, 64)
    mask = (torch.arange(64)[None, None, :] // 16 + torch.arange(4)[:, None, None] * 3).expand(4, 64, 64) % 13
    mask = mask.clone()
    mask[0, :8] = 255  # ignored / crop padding
    mask[1, :8] = 254  # pasted outlier
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    values = []
    for _ in range(12):
        optimizer.zero_grad()
        terms = loss(net(image), {"image": image, "mask": mask})
        terms["loss"].backward()
        optimizer.step()
        values.append(float(terms[term].detach()))
    assert all(torch.isfinite(torch.tensor(values))) and values[-1] < 0.9 * values[0], values
    logits = net(image)["logits"].detach().requires_grad_(True)
    loss.terms[term]({"logits": logits}, {"mask": loss.normalise_target(mask)}).backward()
    assert logits.grad[0, :, :8].abs().max() == 0 and logits.grad[1, :, :8].abs().max() == 0
    assert logits.grad[2].abs().max() > 0


def test_library_loss_trains_through_the_pipeline(make_cfg):
    results = train(make_cfg(TINY_DATA + TINY_TRAIN + ["loss=ce+dice", "trainer=debug"]))
    assert results["status"] == "completed" and "test/miou" in results["metrics"]


def test_library_loss_needs_a_factory(make_cfg):
    from hazardseg.errors import ConfigError
    from hazardseg.losses import LibraryLoss

    with pytest.raises(ConfigError, match=r"_partial_: true"):
        LibraryLoss(fn=torch.nn.CrossEntropyLoss())


def test_new_dataset_and_benchmark_are_one_module_and_one_yaml(make_cfg, plugin_dir, tmp_path):
    """A user's dataset trains (mIoU over its 2 classes, 255 ignored); a user's test-only benchmark scores its
    checkpoint with the leaderboard's metrics -- each from a module and a YAML outside the package."""
    data_root, bench_root = tmp_path / "stripes", tmp_path / "craters"
    _write_scenes(data_root, {"train": 8, "val": 4, "test": 4})
    _write_scenes(bench_root, {"test": 3}, anomaly=True)
    train_args = [_search(plugin_dir), "data=stripes", f"data.root={data_root}", "model=tiny", "scorer=msp", "logger=none",
                  "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "eval.fit_batches=2", "eval.panels=0"]
    results = train(make_cfg(train_args, run="train"))
    assert set(k for k in results["metrics"] if k.startswith("test/iou/")) == {"test/iou/ground", "test/iou/stripe"}
    assert results["metrics"]["test/miou"] > 0.5
    cfg = make_cfg([_search(plugin_dir), "data=craters", f"++data.root={bench_root}", "scorer=[msp,maxlogit]", "logger=none",
                    "trainer.enable_progress_bar=false", "eval.panels=0", f"ckpt_path={results['checkpoint']}"],
                   config_name="eval", run="eval")
    evaluated = evaluate(cfg)
    assert "test/miou" not in evaluated["metrics"] and evaluated["train_data"] == "stripes"
    assert set(evaluated["benchmark"]) == {"msp", "maxlogit"}
    for row in evaluated["scorers"]:
        assert 0.0 <= row["AP"] <= 100.0 and 0.0 <= row["auroc"] <= 1.0
