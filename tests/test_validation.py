"""Config errors are answered before anything heavy runs, in one line naming the key and the fix:
the typed schema (hazardseg.config.SCHEMA), component constructors, and the optimiser dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import TINY_DATA
from hazardseg.config import instantiate, validate
from hazardseg.errors import ConfigError


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Fix:" in message, message
    return message


@pytest.mark.parametrize("override,key", [
    ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1"),
    ("loss.terms.ce.label_smoothing=1.5", "loss.terms.ce.label_smoothing=1.5"),
    ("loss.terms.ce.class_weights=[1,a]", "loss.terms.ce.class_weights"),
    ("trainer.max_epochs=ten", "trainer.max_epochs='ten'"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("eval.panels=abc", "eval.panels='abc'"),
    ("eval.fit_batches=0", "eval.fit_batches=0"),
    ("eval.fit_batches=-3", "eval.fit_batches=-3"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("data.image_size=[64]", "data.image_size"),
    ("resume=maybe", "resume='maybe'"),
    ("reuse=perhaps", "reuse='perhaps'"),
    ("seed=abc", "seed='abc'"),
    ("lock_timeout=-5", "lock_timeout=-5"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch=0"),
    ("optim=adam optim.scheduler.factor=2", "optim.scheduler.factor=2"),
])  # fmt: skip
def test_schema_names_the_key_and_the_fix(make_cfg, override, key):
    cfg = make_cfg(override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg, "train")
    assert _one_line(err).startswith(key)


def test_the_source_of_an_interpolated_value_is_named(make_cfg):
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs='ten'"):  # not optim.scheduler.T_max, which reads it
        validate(make_cfg(["optim=sgd_cosine", "trainer.max_epochs=ten"]), "train")


def test_shipped_configs_pass_the_schema(make_cfg):
    for overrides in ([], ["experiment=streethazards_deeplabv3"], ["experiment=voc_unet"], ["loss=fl+h", "scorer=all"]):
        validate(make_cfg(overrides), "train")
    validate(make_cfg(["ckpt_path=x.ckpt"], config_name="eval"), "eval")


def test_eval_without_checkpoint_is_one_line(make_cfg):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg([], config_name="eval"), "eval")
    assert _one_line(err).startswith("ckpt_path is not set")


@pytest.mark.parametrize("kind", ["file", "read_only"])
def test_unwritable_folders(make_cfg, tmp_path, kind, read_only_dir):
    target = tmp_path / "store"
    if kind == "file":
        target.write_text("not a folder")
    else:
        target.mkdir()
        read_only_dir(target)
    cfg = make_cfg([])
    cfg.paths.model_store = str(target)  # (make_cfg points the store to tmp_path; set it afterwards)
    with pytest.raises(ConfigError) as err:
        validate(cfg, "train")  # training needs the store for its checkpoints
    assert _one_line(err).startswith(f"paths.model_store={target}: cannot write files there")
    cfg = make_cfg(["ckpt_path=x.ckpt"], config_name="eval", run="eval")
    cfg.paths.model_store = str(target)
    with pytest.warns(RuntimeWarning, match="paths.model_store"):  # eval only caches statistics there
        validate(cfg, "eval")
    cfg = make_cfg([], run="out")
    cfg.paths.output_dir = str(target)
    with pytest.raises(ConfigError, match=r"^paths.output_dir=.*hydra.run.dir"):
        validate(cfg, "train")


def test_validation_runs_before_anything_heavy(make_cfg, tmp_path):
    from hazardseg.pipeline import train

    cfg = make_cfg([*TINY_DATA, "logger=none", "eval.panels=lots"])
    with pytest.raises(ConfigError, match="eval.panels='lots'"):
        train(cfg)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_component_errors_name_their_config_key(make_cfg):
    """Kwargs the schema does not know are checked by the component itself; the key comes from Hydra."""
    cfg = OmegaConf.create({"loss": {"_target_": "hazardseg.losses.CompositeLoss", "terms": {
        "ce": {"_target_": "hazardseg.losses.CrossEntropy", "label_smoothing": 1.5},
    }}})
    with pytest.raises(ConfigError, match=r"^loss.terms.ce.label_smoothing=1.5: expected"):
        instantiate(cfg.loss, key="loss")
    cfg = OmegaConf.create({"trainer": {"_target_": "lightning.Trainer", "no_such_option": 1}})
    with pytest.raises(ConfigError, match=r"^trainer: cannot instantiate .*no_such_option"):
        instantiate(cfg.trainer, key="trainer")


def test_optimizer_and_class_weights_checked_before_fit(make_cfg):
    from hazardseg.data import SyntheticStreetHazardsDataModule
    from hazardseg.run.build import build_module
    from hazardseg.run.checks import preflight

    cfg = make_cfg([*TINY_DATA, "model.decoder_channels=16", "+optim.optimizer.betas=[2.0,0.5]"])
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, SyntheticStreetHazardsDataModule)
    module = build_module(cfg, cfg, datamodule, {})
    with pytest.raises(ConfigError) as err:  # torch's "Invalid beta parameter", as one line before training
        preflight(module, datamodule)
    assert _one_line(err).startswith("optim.optimizer: torch.optim.AdamW refuses its arguments") and "beta" in str(err.value)
    cfg = make_cfg([*TINY_DATA, "model.decoder_channels=16", "loss.terms.ce.class_weights=[1,2,3]"], run="cw")
    with pytest.raises(ConfigError) as err:
        build_module(cfg, cfg, datamodule, {})
    assert _one_line(err).startswith("loss.terms.ce.class_weights=[1.0, 2.0, 3.0]: 3 values, but the dataset has 13 classes")


def test_ignore_index_equal_to_the_anomaly_label_is_refused(make_cfg):
    cfg = make_cfg([*TINY_DATA, "data.ignore_index=13"])
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.data, key="data")
    assert _one_line(err).startswith("data.ignore_index=13 is the anomaly label")


def test_corrupt_finished_marker_is_dropped(tmp_path):
    from hazardseg.store import ModelEntry

    entry = ModelEntry(tmp_path, "abc")
    entry.ckpt_dir.mkdir(parents=True)
    entry.best_ckpt.write_bytes(b"x")
    entry.done_file.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="DONE.json: unreadable finished marker"):
        assert entry.finished_checkpoint() is None
    assert not entry.done_file.exists()
    entry.mark_finished({"best_ckpt": str(entry.best_ckpt)})
    assert json.loads(entry.done_file.read_text())["checkpoint"] == "best.ckpt"
    assert entry.finished_checkpoint() == entry.best_ckpt
    with pytest.raises(FileNotFoundError):  # a marker must point at a file that exists
        entry.mark_finished({"checkpoint": "missing.ckpt"})


def test_corrupt_cache_files_are_recomputed(tmp_path):
    from hazardseg.cache import load_json, load_torch, save_json

    bad = tmp_path / "x.json"
    bad.write_text("{truncated")
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        assert load_json(bad) is None
    bad.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        assert load_torch(bad) is None
    with pytest.warns(RuntimeWarning, match="cannot write the cache file"):
        assert save_json(bad / "under_a_file.json", {"a": 1}) is False
    assert save_json(tmp_path / "ok" / "y.json", {"a": 1}) and load_json(tmp_path / "ok" / "y.json") == {"a": 1}


def test_model_store_on_a_file_is_one_line_at_start(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    store = tmp_path / "store"
    store.write_text("")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "logger=none", *TINY_DATA, "trainer=debug"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HAZARDSEG_MODEL_STORE": str(store)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"paths.model_store={store}: cannot write files there" in line and "HAZARDSEG_MODEL_STORE" in line
    assert Path(tmp_path / "outputs" / "train" / "runs").is_dir()


@pytest.mark.parametrize("model,refused", [("deeplabv3plus", True), ("unet", False)])
def test_training_batch_of_one(make_cfg, model, refused):
    """DeepLabV3+'s ASPP image pooling (BatchNorm on a 1x1 map) cannot train on one image: refused at
    start, in one line; a model without it trains with batch size 1."""
    from hazardseg.run.build import build_module
    from hazardseg.run.checks import check_batch_of_one

    cfg = make_cfg([*TINY_DATA, f"model={model}", "data.batch_size=1"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, cfg, datamodule, {})
    if refused:
        with pytest.raises(ConfigError) as err:
            check_batch_of_one(module, datamodule)
        assert _one_line(err).startswith("data.batch_size=1: a training batch of one image")
    else:
        check_batch_of_one(module, datamodule)
    datamodule.batch_size, datamodule.skip_bad_samples = 4, True  # skipping can shrink a batch to one image
    check_batch_of_one(module, datamodule)
    assert module.min_train_batch == (2 if refused else 1)


def test_eval_data_config_follows_the_environment_and_the_command_line(make_cfg, monkeypatch):
    """STREETHAZARDS_ROOT moved after training: eval.py follows it; an explicit data.root wins; a data option
    on the command line is the test data while the scorers fit on the model's own (moved) data."""
    from hazardseg.run.build import env_sources, eval_data_configs

    def test_root(chosen=None):
        test, fit = eval_data_configs(trained, meta, chosen)
        assert test is fit
        return test.root

    monkeypatch.setenv("STREETHAZARDS_ROOT", "/data/old")
    cfg = make_cfg(["data=streethazards"])
    assert env_sources(cfg.data) == {"root": "STREETHAZARDS_ROOT"}
    trained = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))  # checkpoints store it resolved
    meta = {"data_env": env_sources(cfg.data)}
    assert test_root() == "/data/old"
    monkeypatch.setenv("STREETHAZARDS_ROOT", "/data/new")
    assert test_root() == "/data/new"
    assert test_root(OmegaConf.create({"root": "/data/cli"})) == "/data/cli"
    benchmark = OmegaConf.create({"_target_": "hazardseg.data.SmiycAnomalyDataModule", "root": "/data/smiyc"})
    test, fit = eval_data_configs(trained, meta, benchmark)
    assert (test.root, test._target_) == ("/data/smiyc", benchmark._target_)
    assert (fit.root, fit._target_) == ("/data/new", trained._target_)
    monkeypatch.delenv("STREETHAZARDS_ROOT")
    assert test_root() == "/data/old"


def test_eval_command_line_data_overrides():
    from hazardseg.cli import allow_data_overrides

    argv = ["eval.py", "ckpt_path=x", "data.root=/d", "data.image_size=[1,2],[3,4]", "+data.a=1", "++data.b=2", "data=smiyc", "scorer=sml"]
    assert allow_data_overrides(argv) == ["eval.py", "ckpt_path=x", "++data.root=/d", "++data.image_size=[1,2],[3,4]",
                                          "+data.a=1", "++data.b=2", "data=smiyc", "scorer=sml"]


def test_sweep_failures_are_printed_and_set_the_exit_status(tmp_path, capsys):
    from hazardseg import cli

    for job, results in enumerate([{"status": "completed"}, {"status": "failed", "error": "optim.optimizer.lr=-1: bad", "exit_code": 2}, None]):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- optim.optimizer.lr={job}\n")
        if results is not None:
            (tmp_path / str(job) / "results.json").write_text(json.dumps(results))
    failed = cli.report_sweep_failures(tmp_path)
    assert [f["job"] for f in failed] == [1, 2]
    err = capsys.readouterr().err
    assert "job 1 (optim.optimizer.lr=1) failed: optim.optimizer.lr=-1: bad" in err and "job 2 (optim.optimizer.lr=2) failed: no results.json" in err
    with pytest.raises(SystemExit) as exit_:
        cli.launch(lambda: None)
    assert exit_.value.code == 1  # a missing results.json is not a known user error
    (tmp_path / "2").rename(tmp_path / "gone")
    cli.report_sweep_failures(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.launch(lambda: None)
    assert exit_.value.code == 2
    (tmp_path / "1" / "results.json").write_text(json.dumps({"status": "completed"}))
    cli.report_sweep_failures(tmp_path)
    cli.launch(lambda: None)  # nothing failed: returns
