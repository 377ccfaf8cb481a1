"""Runs that recover, caches that follow their inputs, skipped samples that are dropped and reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_DATA, TINY_TRAIN
from hazardseg.errors import DataError
from hazardseg.pipeline import evaluate, train

EVAL = ["logger=none", "trainer.enable_progress_bar=false", "eval.fit_batches=2", "eval.panels=0"]


def _data_root(trained: dict) -> Path:
    from hazardseg.data import SyntheticStreetHazardsDataModule

    data = trained["config"]["data"]
    return SyntheticStreetHazardsDataModule(**{k: v for k, v in data.items() if k != "_target_"}).root


def test_caches_follow_their_inputs_and_never_lose_a_result(trained, make_cfg, tmp_path, capsys, recwarn, read_only_dir):
    ckpt = trained["checkpoint"]
    store = tmp_path / "store"

    def run(name: str, *args: str) -> dict:
        cfg = make_cfg([*EVAL, f"ckpt_path={ckpt}", *args], config_name="eval", run=name)
        cfg.paths.model_store = str(store)
        return evaluate(cfg)

    # (1) statistics fitted at another image size are not reused for the checkpoint's own data config
    run("small", "scorer=sml", "++data.image_size=[72,128]")
    assert "scorer 'sml': fitting statistics" in capsys.readouterr().out
    run("plain", "scorer=sml")
    assert "scorer 'sml': fitting statistics" in capsys.readouterr().out
    # (6) statistics that cannot be cached are a warning; the result still lands
    read_only_dir(store)
    results = run("ro", "scorer=sml", "eval.fit_batches=1")
    assert results["status"] == "completed" and "test/sml/auroc" in results["metrics"]
    assert any("cannot write the cache file" in str(w.message) for w in recwarn)
    assert json.loads((Path(results["config"]["paths"]["output_dir"]) / "results.json").read_text())["status"] == "completed"


def test_eval_on_a_missing_root_generates_nothing(trained, make_cfg, tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    cfg = make_cfg([*EVAL, f"ckpt_path={trained['checkpoint']}", f"++data.root={missing}"], config_name="eval", run="missing")
    with pytest.raises(DataError, match=f"data.root={missing}: folder not found"):
        evaluate(cfg)
    assert not (tmp_path / "nonexistent").exists()


def test_skipped_test_image_is_dropped_and_listed(trained, make_cfg, tmp_path):
    from hazardseg.data import read_odgt

    data = Path(shutil.copytree(_data_root(trained), tmp_path / "data"))
    bad = data / "test" / read_odgt(data / "test" / "test.odgt")[0]["fpath_img"]
    bad.write_bytes(bad.read_bytes()[:100])
    args = [*EVAL, f"ckpt_path={trained['checkpoint']}", f"++data.root={data}", "logger=csv"]
    with pytest.raises(DataError, match=str(bad)):
        evaluate(make_cfg(args, config_name="eval", run="strict"))
    results = evaluate(make_cfg([*args, "++data.skip_bad_samples=true"], config_name="eval", run="skip"))
    assert list(results["skipped_samples"]) == [str(bad)] and "cannot decode image" in results["skipped_samples"][str(bad)]
    n_test = trained["config"]["data"]["n_test"]
    assert results["metrics"]["test/msp/per_image/num_images"] <= n_test - 1  # dropped, not replaced by a neighbour
    run_dir = Path(results["config"]["paths"]["output_dir"])
    assert json.loads((run_dir / "results.json").read_text())["skipped_samples"] == results["skipped_samples"]
    assert "data/skipped_samples" in (run_dir / "csv" / "metrics.csv").read_text()  # and in every logger


def test_missing_best_checkpoint_falls_back_to_last_once(make_cfg, capsys):
    args = TINY_DATA + TINY_TRAIN + ["scorer=msp", "eval.panels=0"]
    first = train(make_cfg(args, run="a"))
    ckpt_dir = Path(first["checkpoint"]).parent
    Path(first["checkpoint"]).unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = ckpt_dir / f".best.ckpt.{__import__('hazardseg.io', fromlist=['HOST']).HOST}.{dead.pid}.abcdefgh.tmp"
    partial.write_bytes(b"partial checkpoint of a killed save")
    capsys.readouterr()
    second = train(make_cfg(args, run="b"))
    out = capsys.readouterr()
    assert second["reused_checkpoint"] is True and second["checkpoint"] == str(ckpt_dir / "last.ckpt")
    assert "best.ckpt of the finished model" in out.err and "is missing: using" in out.err
    assert second["metrics"]["test/miou"] >= 0 and not partial.exists()  # (8) the killed writer's file is gone
    third = train(make_cfg([*args, "test_after_fit=false"], run="c"))
    assert third["checkpoint"] == str(ckpt_dir / "last.ckpt") and "is missing" not in capsys.readouterr().err  # said once


def test_validation_every_second_epoch_with_a_plateau_scheduler(make_cfg):
    """ReduceLROnPlateau on val/miou steps only on epochs that validate (Lightning raised on the others)."""
    cfg = make_cfg([*TINY_DATA, *TINY_TRAIN, "data.n_train=4", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
                    "scorer=msp", "eval.panels=0", "test_after_fit=false"])
    results = train(cfg)
    assert results["status"] == "completed" and results["trained"]["epochs"] == 3
    assert Path(results["checkpoint"]).name == "best.ckpt"


def test_smoke_run_stays_a_smoke_run(make_cfg, monkeypatch, capsys):
    """trainer=debug with SML: statistics from one batch, no pass over the whole dataset for the class report."""
    from hazardseg.scorers import SML

    seen = []
    original = SML.fit

    def counting(self, outputs, reduce=None):
        return original(self, (seen.append(1) or item for item in outputs), reduce)

    monkeypatch.setattr(SML, "fit", counting)
    results = train(make_cfg([*TINY_DATA, "data.n_train=16", "trainer=debug", "logger=none", "scorer=sml", "eval.panels=0"]))
    assert results["status"] == "completed" and "test/sml/auroc" in results["metrics"]
    assert len(seen) == 1
    assert "class distribution: skipped in a fast_dev_run" in capsys.readouterr().out


def test_sigint_writes_results_and_last_checkpoint(make_cfg, monkeypatch):
    """Ctrl-C inside fit: Lightning shuts down with sys.exit(1); we record an interrupted run and exit 130."""
    from hazardseg.cli import run_task
    from hazardseg.module import Segmenter

    original = Segmenter.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step >= 2:
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Segmenter, "training_step", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    cfg = make_cfg([*TINY_DATA, *TINY_TRAIN, "trainer.max_epochs=5", "scorer=msp"])
    try:
        with pytest.raises(SystemExit) as exit_:
            run_task(train, cfg)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after the first one
    assert exit_.value.code == 130
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert results["status"] == "interrupted" and "SIGINT" in results["error"] and results["exit_code"] == 130
    (last,) = Path(cfg.paths.model_store).glob("*/checkpoints/last.ckpt")
    assert last.is_file()


def test_waiting_for_a_locked_model_says_who_and_times_out(tmp_path, capsys):
    from hazardseg.store import LockTimeout, ModelEntry

    holder, waiter = ModelEntry(tmp_path, "abc"), ModelEntry(tmp_path, "abc")
    with holder.lock():
        description = json.loads((holder.dir / ".lock").read_text())
        assert description["pid"] == os.getpid() and description["since"]
        start = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            with waiter.lock(timeout=0.5, poll=0.1):
                pass
        assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message and f"pid {os.getpid()}" in message and "since" in message and "lock_timeout" in message
    assert f"waiting for model abc: locked by pid {os.getpid()}" in capsys.readouterr().out
    got = []
    with holder.lock():
        thread = threading.Thread(target=lambda: got.append(waiter.lock(timeout=30, poll=0.05).__enter__()))
        thread.start()
        time.sleep(0.3)
        assert not got  # still waiting while held
    thread.join(10)
    assert got == [None]  # acquired once released


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    from hazardseg.io import HOST, atomic_path, remove_stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".best.ckpt.{HOST}.{dead.pid}.abcdefgh.tmp"
    live = tmp_path / f".last.ckpt.{HOST}.{os.getpid()}.abcdefgh.tmp"
    foreign = tmp_path / ".last.ckpt.otherhost.1.abcdefgh.tmp"
    old = tmp_path / "sub" / ".scores.json.x1y2z3.tmp"  # the naming before writer pids were encoded
    old.parent.mkdir()
    for f in (stale, live, foreign, old):
        f.write_bytes(b"x")
    os.utime(old, (time.time() - 7 * 3600,) * 2)
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted([stale, old])
    assert live.exists() and foreign.exists()
    with atomic_path(tmp_path / "a.json") as tmp:  # our own temporary files carry host and pid
        assert tmp.name.startswith(f".a.json.{HOST}.{os.getpid()}.") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")


def test_class_distribution_cache_follows_the_data(tmp_path, read_only_dir, recwarn, monkeypatch):
    """Keyed by the splits' files (not by the model): an edited annotation is a new report; an unwritable
    cache folder is a warning."""
    import hazardseg.data.stats as stats
    from hazardseg.data import StreetHazardsDataModule, generate_streethazards, read_odgt
    from hazardseg.run.fit import class_report

    root = generate_streethazards(tmp_path / "sh", n_train=4, n_val=2, n_test=2, width=64, height=36)
    computed = []
    original = stats.split_distribution
    monkeypatch.setattr(stats, "split_distribution", lambda dm: computed.append(1) or original(dm))
    make = lambda: StreetHazardsDataModule(root=root, image_size=[36, 64], batch_size=2)  # noqa: E731
    cache = tmp_path / "cache"
    first = class_report(make(), cache)
    assert class_report(make(), cache) == first and len(computed) == 1  # reused
    seg = root / "train" / read_odgt(root / "train" / "train.odgt")[0]["fpath_segm"]
    Image.fromarray(np.full((36, 64), 8, np.uint8)).save(seg)  # every pixel "road" now
    second = class_report(make(), cache)
    assert len(computed) == 2 and second["train"]["counts"] != first["train"]["counts"]
    read_only_dir(cache)
    Image.fromarray(np.full((36, 64), 9, np.uint8)).save(seg)
    assert class_report(make(), cache)["train"]["counts"] != second["train"]["counts"]
    assert any("cannot write the cache file" in str(w.message) for w in recwarn)


@pytest.mark.parametrize("val_every", [1, 2])
def test_last_checkpoint_is_the_latest_epoch_when_validation_gets_worse(tmp_path, val_every):
    """Lightning >= 2.6 writes last.ckpt only with a new top-k checkpoint; ours writes it every epoch, so
    resume=auto continues from the latest epoch and not from the best one."""
    import lightning as L
    import torch

    from hazardseg.callbacks import ModelCheckpoint

    class Worsening(L.LightningModule):  # val/miou falls every epoch: only epoch 0 is ever the best
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/miou", 1.0 / (1 + self.current_epoch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    callback = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/miou", mode="max", save_top_k=1,
                               save_last=True, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=4, check_val_every_n_epoch=val_every, callbacks=[callback], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Worsening(), train_dataloaders=data, val_dataloaders=data)
    last, best = (torch.load(tmp_path / f"{name}.ckpt", weights_only=False) for name in ("last", "best"))
    assert (last["epoch"], last["global_step"]) == (3, 8)  # the 4th epoch, after 2 steps per epoch
    assert best["epoch"] == val_every - 1  # the first validated epoch stays the best
