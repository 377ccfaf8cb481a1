"""What sweepers optimise: a validation metric (val mIoU, or AUPR on the pasted-outlier val proxy), never test."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from conftest import TINY_DATA
from fakes import PasteSquare
from hazardseg.data.transforms import OUTLIER_LABEL
from hazardseg.errors import ConfigError
from hazardseg.objective import check_objective
from hazardseg.scorers import MSP, SML


def _module(**scorers):
    return SimpleNamespace(scorers=scorers)


@pytest.mark.parametrize("objective,fix", [
    ("test/miou", "never the test split"),
    ("val/energy/aupr", "scorer 'energy' is not configured"),
    ("val/sml/aupr", "needs fitted statistics"),
    ("val/msp/aupr", "data.val_outliers"),
    ("val/msp/f1", "unknown validation metric"),
])
def test_objective_must_be_a_computable_validation_metric(objective, fix):
    with pytest.raises(ConfigError, match=fix):
        check_objective(objective, _module(msp=MSP(), sml=SML()), SimpleNamespace(val_outliers=None))


def test_valid_objectives():
    check_objective("val/miou", _module(), SimpleNamespace(val_outliers=None))
    check_objective("val/msp/fpr95", _module(msp=MSP()), SimpleNamespace(val_outliers=PasteSquare()))
    check_objective(None, _module(), None)


def test_val_proxy_is_the_same_every_epoch_and_only_in_val(make_cfg):
    cfg = make_cfg([*TINY_DATA, "data.val_outliers.enabled=true", "data.val_outliers_seed=3"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    first = [b["mask"] for b in dm.val_dataloader()]
    torch.manual_seed(123)  # the global RNG state must not matter ...
    second = [b["mask"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all((m == OUTLIER_LABEL).flatten(1).any(1).all() for m in first)  # every val image has pasted pixels
    assert not any((b["mask"] == OUTLIER_LABEL).any() for b in dm.test_dataloader())
    assert not any((b["mask"] == OUTLIER_LABEL).any() for b in dm.train_dataloader())
    raw = dm.datasets["val"].load_raw(0)
    rng = torch.get_rng_state()
    dm.val_transform(raw)
    assert torch.equal(rng, torch.get_rng_state())  # ... and the proxy does not move it (training randomness unchanged)
    other = instantiate(make_cfg([*TINY_DATA, "data.val_outliers.enabled=true", "data.val_outliers_seed=4"], run="b").data)
    other.prepare_data()
    assert not torch.equal(first[0], next(iter(other.val_dataloader()))["mask"])  # the seed picks the proxy split
