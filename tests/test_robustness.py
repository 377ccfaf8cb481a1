"""Nothing lost, no cryptic failures: resume after SIGKILL, checkpoint on SIGTERM, NaN loss, bad checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import REPO, TINY_DATA, model_entries
from hazardseg.errors import ConfigError
from hazardseg.module import NonFiniteLossError
from hazardseg.pipeline import evaluate, train

RESUME_ARGS = [
    *TINY_DATA, "data.n_train=16", "trainer.max_epochs=4", "trainer.deterministic=true", "logger=none",
    "trainer.enable_progress_bar=false", "model.decoder_channels=16", "scorer=msp",
]


WORKERS = ["data.num_workers=2", "data.persistent_workers=true"]


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout: float = 300, interval: float = 0.05) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def _results(cwd: Path) -> dict:
    (run,) = list((cwd / "outputs" / "train" / "runs").glob("*/results.json"))
    return json.loads(run.read_text())


def _last_ckpt(cwd: Path) -> list[Path]:
    return list((cwd / "outputs" / "models").glob("*/checkpoints/last.ckpt"))


@pytest.mark.slow  # ~3 min: three trainings in subprocesses
def test_sigkill_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    """Killed and resumed with 2 persistent loader workers == uninterrupted without workers: augmentation
    is a function of (seed, epoch, index), not of the workers' RNG streams."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    proc = _popen([*RESUME_ARGS, *WORKERS], interrupted)
    _wait_for(lambda: bool(_last_ckpt(interrupted)))  # epoch 0 finished and checkpointed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (store,) = model_entries(interrupted / "outputs" / "models")
    assert not (store / "DONE.json").exists(), "training finished before the kill: the test proved nothing"
    killed_epoch = torch.load(_last_ckpt(interrupted)[0], weights_only=True)["epoch"]
    assert killed_epoch < 3

    time.sleep(1.1)  # a new Hydra run dir (timestamped per second)
    rerun = _popen([*RESUME_ARGS, *WORKERS], interrupted)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    assert "resuming interrupted training" in out
    resumed = [json.loads(p.read_text()) for p in (interrupted / "outputs" / "train" / "runs").glob("*/results.json")]
    (resumed,) = [r for r in resumed if r.get("status") == "completed"]
    assert resumed["resumed_from"].endswith("last.ckpt")

    base = _popen(RESUME_ARGS, straight)
    out, _ = base.communicate(timeout=600)
    assert base.returncode == 0, out[-3000:]
    reference = _results(straight)
    for key in ("test/miou", "test/pixel_acc", "test/msp/aupr", "test/msp/auroc", "test/msp/fpr95"):
        assert resumed["metrics"][key] == pytest.approx(reference["metrics"][key], abs=1e-6), key
    assert resumed["trained"]["best_val_miou"] == pytest.approx(reference["trained"]["best_val_miou"], abs=1e-6)


def test_loader_workers_do_not_change_results(make_cfg, tmp_path):
    """The same training with 0 and with 2 persistent workers gives the same model and test metrics."""
    results = {}
    for workers in (0, 2):
        cfg = make_cfg([*RESUME_ARGS, "trainer.max_epochs=2", "data.n_train=8", "eval.panels=0",
                        f"data.num_workers={workers}", "data.persistent_workers=true"], run=f"workers{workers}")
        with open_dict(cfg):  # num_workers is not part of the training hash: one store each, or it is reused
            cfg.paths.model_store = str(tmp_path / f"models{workers}")
        results[workers] = train(cfg)
    assert results[2]["trained"]["epochs"] == 2
    for key in ("test/miou", "test/pixel_acc", "test/msp/aupr", "test/msp/auroc", "test/msp/fpr95"):
        assert results[2]["metrics"][key] == pytest.approx(results[0]["metrics"][key], abs=1e-6), key


def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path):
    proc = _popen([*RESUME_ARGS, "trainer.max_epochs=200"], tmp_path)
    _wait_for(lambda: bool(_last_ckpt(tmp_path)))
    ckpt = _last_ckpt(tmp_path)[0]
    first = torch.load(ckpt, weights_only=True)["global_step"]
    time.sleep(1.0)  # let it get into the next epoch
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: saved" in out, out[-2000:]
    assert torch.load(ckpt, weights_only=True)["global_step"] > first


def test_nan_loss_stops_naming_step_and_keeps_checkpoint(make_cfg, monkeypatch):
    from hazardseg.losses import CompositeLoss

    original, calls = CompositeLoss.forward, {"n": 0}

    def diverging(self, outputs, batch):
        terms = original(self, outputs, batch)
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0 (2 steps) is fine, epoch 1 diverges
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(CompositeLoss, "forward", diverging)
    cfg = make_cfg([*TINY_DATA, "trainer.max_epochs=3", "trainer.enable_progress_bar=false", "logger=none",
                    "model.decoder_channels=16"])
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    message = str(err.value)
    assert "epoch 1" in message and "global step 2" in message and "batch 0" in message
    assert "gradient_clip_val" in message
    (last,) = list(Path(cfg.paths.model_store).glob("*/checkpoints/last.ckpt"))
    assert torch.load(last, weights_only=True)["epoch"] == 0


def test_resume_from_checkpoint_of_another_model_is_a_clear_error(make_cfg, tmp_path):
    from hazardseg.models import SegmentationNet

    other = SegmentationNet(num_classes=5, decoder_channels=16)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in other.state_dict().items()}}, path)
    cfg = make_cfg([*TINY_DATA, "logger=none", "model.decoder_channels=16", f"ckpt_path={path}"])
    with pytest.raises(ConfigError, match="does not match the configured model/class count"):
        train(cfg)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "foreign"])
def test_eval_rejects_unusable_checkpoints(make_cfg, tmp_path, content):
    path = tmp_path / "bad.ckpt"
    if content == "foreign":
        torch.save({"state_dict": {"layer.weight": torch.zeros(1)}}, path)
        expected = "not a hazardseg checkpoint"
    else:
        path.write_bytes(content)
        expected = "cannot be loaded safely"
    cfg = make_cfg(["logger=none", f"ckpt_path={path}"], config_name="eval")
    with pytest.raises(ConfigError, match=expected):
        evaluate(cfg)


def test_unknown_config_option_is_hydra_one_liner(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=nonexistent"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Could not find 'model/nonexistent'" in proc.stderr and "deeplabv3plus" in proc.stderr
