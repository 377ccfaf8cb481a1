"""Shared fixtures: compose the real configs with Hydra's compose API on tiny synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SAMPLES = REPO.parent / "shared" / "samples"

# Tiny synthetic StreetHazards: enough to train a few steps and to have anomalies in test.
TINY_DATA = [
    "data.n_train=8", "data.n_val=4", "data.n_test=4", "data.width=128", "data.height=72",
    "data.image_size=[64,112]", "data.batch_size=4", "data.num_workers=0",
]
# A Mask2Former small enough for a few CPU steps in a test (the CPU default's YAML, narrowed).
TINY_M2F = ["model=mask2former", "model.config.num_queries=8", "model.config.hidden_dim=32", "model.config.mask_feature_size=32",
            "model.config.feature_size=32", "model.config.encoder_layers=1", "model.config.encoder_feedforward_dim=64",
            "model.config.decoder_layers=3", "model.config.dim_feedforward=64", "model.config.num_attention_heads=2",
            "loss.terms.mask2former.num_points=256"]
TINY_TRAIN = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none",
              "model.decoder_channels=32", "eval.fit_batches=2"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """No network, no writes outside tmp: synthetic data cache and W&B go to a session tmp dir."""
    root = tmp_path_factory.mktemp("env")
    os.environ["HAZARDSEG_CACHE"] = str(root / "cache")
    os.environ["WANDB_DIR"] = str(root / "wandb")
    os.environ["WANDB_SILENT"] = "true"
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["NETRC"] = str(root / "no-netrc")
    yield


def compose_config(config_name: str, overrides: list[str], run_dir: Path, store: Path | None = None) -> DictConfig:
    """Compose like `python train.py <overrides>` would, with the run dir and model store in tmp."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.model_store = str(store or run_dir.parent / "models")
        cfg.paths.root_dir = str(run_dir.parent)
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(run_dir.parent)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # like @hydra.main: the task sees its config without the `hydra` node
        del cfg["hydra"]
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """A tiny model (TINY_DATA + TINY_TRAIN, MSP) trained once per session: its training's results. For tests that
    only read it (eval, predict, export, fault injection); their runs write into their own run folders and stores."""
    from hazardseg.pipeline import train

    root = tmp_path_factory.mktemp("tiny_model")
    return train(compose_config("train", TINY_DATA + TINY_TRAIN + ["scorer=msp", "eval.panels=0"], root / "run", root / "models"))


@pytest.fixture(scope="session")
def checkpoint(trained) -> str:
    return trained["checkpoint"]


@pytest.fixture
def make_cfg(tmp_path):
    def _make(overrides: list[str] = (), config_name: str = "train", run: str = "run") -> DictConfig:
        return compose_config(config_name, list(overrides), tmp_path / run, tmp_path / "models")

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture
def read_only_dir():
    """Make a folder read-only for this process: chmod for normal users; root ignores permissions, so
    there a read-only bind mount is used (skipped where mounting is not allowed)."""
    import subprocess

    mounted, chmodded = [], []

    def _make(path: Path) -> None:
        if os.geteuid() != 0:
            os.chmod(path, 0o555)
            chmodded.append(path)
            return
        ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
        if ok:
            mounted.append(path)
            ok = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("running as root without permission to mount a read-only folder")

    yield _make
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)
    for path in chmodded:
        os.chmod(path, 0o755)


def model_entries(store: Path) -> list[Path]:
    """The trained models of a model store (``<hash>/`` folders; not scorer_stats/ or class_distribution/)."""
    import re

    return [p for p in Path(store).iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{12}", p.name)]
