"""W&B mode resolution never blocks: offline without credentials or without a reachable server."""

from __future__ import annotations

import time

import pytest

from hazardseg.errors import ConfigError
from hazardseg.instantiators import instantiate_callbacks, instantiate_loggers
from hazardseg.loggers import wandb_mode


def test_no_credentials_means_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode("auto") == "offline"


def test_credentials_but_unreachable_server_is_offline_and_bounded(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:1")  # nothing listens on port 1
    start = time.time()
    assert wandb_mode("auto") == "offline"
    assert time.time() - start < 5


@pytest.mark.parametrize("env,expected", [("disabled", "disabled"), ("dryrun", "offline"), ("online", "online")])
def test_wandb_mode_env_wins(monkeypatch, env, expected):
    monkeypatch.setenv("WANDB_MODE", env)
    assert wandb_mode("auto") == expected
    assert wandb_mode("offline") == "offline"  # an explicit config value wins over the environment


def test_logger_entries_need_a_target_and_must_build_loggers(tmp_path):
    with pytest.raises(ConfigError, match="logger.tensorboardx"):
        instantiate_loggers({"tensorboardx": {}})
    with pytest.raises(ConfigError, match="logger.odd: .*not a Logger"):
        instantiate_loggers({"odd": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(ConfigError, match="callbacks.odd: .*not a Callback"):
        instantiate_callbacks({"odd": {"_target_": "collections.OrderedDict"}})


def test_instantiators_skip_null_entries_and_none_factories(tmp_path):
    csv = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path)}
    assert len(instantiate_loggers({"csv": csv, "wandb": None})) == 1
    bar = {"_target_": "hazardseg.callbacks.rich_progress_bar", "enabled": False}
    assert instantiate_callbacks({"progress_bar": bar, "panels": None}) == []
