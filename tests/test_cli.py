"""The entry points as users type them (subprocesses): multirun reuse, W&B offline, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_DATA, model_entries
from wandb_reader import inventory

TINY = TINY_DATA + ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "model.decoder_channels=32", "eval.fit_batches=2"]


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def sweep_dir(cwd: Path, task: str = "train") -> Path:
    (found,) = list((cwd / "outputs" / task / "multiruns").iterdir())
    return found


def test_scorer_multirun_trains_once_and_logs_wandb_offline(tmp_path):
    # No credentials (conftest points NETRC to nothing): mode=auto must choose offline, not hang.
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_DIR")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-m", "scorer=msp,maxlogit", "logger=wandb", *TINY],
        cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = sweep_dir(tmp_path)
    jobs = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert jobs[0]["reused_checkpoint"] is False and jobs[1]["reused_checkpoint"] is True
    assert jobs[0]["train_hash"] == jobs[1]["train_hash"]
    assert "test/msp/aupr" in jobs[0]["metrics"] and "test/maxlogit/aupr" in jobs[1]["metrics"]
    assert proc.stdout.count("reusing trained model") == 1
    # one offline W&B run per job, grouped by the sweep, and the sync command printed
    for job in (0, 1):
        assert len(list((sweep / str(job) / "wandb").glob("offline-run-*"))) == 1, job
    assert all(j["wandb_sync"] and j["wandb_sync"][0].startswith("wandb sync ") for j in jobs)
    assert proc.stdout.count("W&B run logged offline; to upload it: wandb sync") == 2
    rows = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert rows[1]["reused_checkpoint"] == "True"
    # W&B: sweep jobs grouped by the sweep, job_type train; the reusing job points to the run that trained the model
    runs = [inventory(next((sweep / str(job) / "wandb").glob("offline-run-*/run-*.wandb"))) for job in (0, 1)]
    assert [(r["run"].run_group, r["run"].job_type) for r in runs] == [(sweep.name, "train")] * 2
    trainer_id = runs[0]["run"].run_id
    assert runs[1]["summary"]["trained_in.run_id"] == trainer_id and jobs[1]["trained_in"]["run_id"] == trainer_id
    assert (sweep / "0" / "train.log").read_text().count("train results") == 1  # the final table reaches the job's log

    # A scorer sweep over the saved checkpoint with eval.py: eval runs link to the training run.
    proc = run([str(REPO / "eval.py"), "-m", "scorer=entropy,energy", f"ckpt_path={jobs[0]['checkpoint']}",
                "logger=wandb", "logger.wandb.mode=offline", "trainer.enable_progress_bar=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [json.loads((sweep_dir(tmp_path, "eval") / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert "test/entropy/aupr" in evals[0]["metrics"] and "test/energy/aupr" in evals[1]["metrics"]
    assert evals[0]["metrics"]["test/miou"] == pytest.approx(jobs[0]["metrics"]["test/miou"], abs=1e-6)
    eval_run = inventory(next((sweep_dir(tmp_path, "eval") / "0" / "wandb").glob("offline-run-*/run-*.wandb")))
    assert eval_run["run"].job_type == "eval" and eval_run["config"]["trained_in.run_id"] == trainer_id
    assert eval_run["config"]["choice.loss"] == "ce" and eval_run["config"]["choice.scorer"] == "entropy"
    assert eval_run["config"]["model.decoder_channels"] == 32  # the model's training config, as columns


def test_failed_job_does_not_stop_the_sweep_but_fails_it(tmp_path):
    proc = run([str(REPO / "train.py"), "-m", "optim.optimizer.lr=-1,1e-3", "logger=none", "trainer=debug", *TINY_DATA], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]  # after running every job
    assert "job 0 (optim.optimizer.lr=-1) failed: optim.optimizer.lr=-1: expected a number > 0" in proc.stderr
    sweep = sweep_dir(tmp_path)
    failed = json.loads((sweep / "0" / "results.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("optim.optimizer.lr=-1") and failed["exit_code"] == 2
    assert json.loads((sweep / "1" / "results.json").read_text())["status"] == "completed"
    rows = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "completed"]


def test_missing_streethazards_root_is_one_clear_line(tmp_path):
    proc = run([str(REPO / "train.py"), "data=streethazards", "logger=none"], tmp_path, env={"STREETHAZARDS_ROOT": ""})
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "data.root" in error_lines[0] and "anomaly-seg" in error_lines[0]
    assert "Traceback" not in proc.stderr


def test_eval_missing_checkpoint_is_one_clear_line(tmp_path):
    proc = run([str(REPO / "eval.py"), "ckpt_path=nowhere/best.ckpt", "logger=none"], tmp_path)
    assert proc.returncode == 2
    assert "error: ckpt_path=nowhere/best.ckpt: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(2000)  # ~5 min idle; the subprocess timeout (1800 s) decides on a loaded machine
def test_default_training_learns(tmp_path):
    """`python train.py` as the README says (minutes; MaxLogit scored too, which changes nothing in training):
    the default recipe's targets, test mIoU >= 0.55 and MSP or MaxLogit AUROC >= 0.85 (README, "default run")."""
    proc = run([str(REPO / "train.py"), "trainer.enable_progress_bar=false", "scorer=[msp,maxlogit]"], tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = list((tmp_path / "outputs" / "train" / "runs").glob("*/results.json"))
    results = json.loads(results_file.read_text())
    metrics = results["metrics"]
    assert results["trained"]["best_val_miou"] > 0.5
    assert metrics["test/miou"] >= 0.55
    assert max(metrics["test/msp/auroc"], metrics["test/maxlogit/auroc"]) >= 0.85, metrics


def test_concurrent_jobs_with_one_training_config_train_it_once(tmp_path):
    """Parallel launchers: two processes, same training config -> one trains, the other waits and reuses."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    for i, scorer in enumerate(("msp", "entropy")):
        (tmp_path / str(i)).mkdir()
        args = [sys.executable, str(REPO / "train.py"), f"scorer={scorer}", "logger=none", *TINY,
                f"paths.model_store={tmp_path / 'models'}"]
        procs.append(subprocess.Popen(args, cwd=tmp_path / str(i), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert sum("reusing trained model" in out for out in outputs) == 1
    (entry,) = model_entries(tmp_path / "models")
    assert sorted(p.name for p in (entry / "checkpoints").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert not list(entry.rglob("*.tmp"))


def test_ddp_two_cpu_processes_train_and_test(tmp_path):
    """trainer=ddp re-runs the script for rank 1 while rank 0 holds the model lock: it must not deadlock."""
    args = [str(REPO / "train.py"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.sync_batchnorm=false", "trainer.precision=32-true", "logger=none", "scorer=[msp,sml]", *TINY,
            "data.batch_size=2"]
    proc = run(args, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (results_file,) = list((tmp_path / "outputs" / "train" / "runs").glob("*/results.json"))
    results = json.loads(results_file.read_text())
    assert results["status"] == "completed" and "test/sml/auroc" in results["metrics"]
    (entry,) = model_entries(tmp_path / "outputs" / "models")
    assert (entry / "DONE.json").is_file()
    assert len(list((tmp_path / "outputs" / "models" / "scorer_stats").glob("sml-*.pt"))) == 1  # fitted once, by rank 0's cache
    assert "It is recommended to use `self.log(" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("overrides, key", [
    # messages name the real key and the value at fault (not a placeholder, not a neighbour)
    (["loss=energy_oe", "loss.terms.energy_margin.temperature=0"], "loss.terms.energy_margin.temperature=0: must be > 0"),
    (["loss=energy_oe", "loss.terms.energy_margin.m_in=nan"], "loss.terms.energy_margin.m_in=nan: must be a finite"),
    (["loss=meta_ood", "loss.terms.outlier_entropy.normalize=images"], "loss.terms.outlier_entropy.normalize='images'"),
    (["loss=pebal", "+loss.terms.abstention.reward_blur=4"], "loss.terms.abstention.reward_blur=4: must be odd"),
    (["model.num_classes=5"], "model.num_classes=5: the training data (synthetic_streethazards) has 13 classes"),
    (["loss=meta_ood", "loss.terms.outlier_entropy.weight=-1"], "loss.terms.outlier_entropy.weight=-1.0"),
    # an outlier method whose configuration never pastes an object would train nothing of the method, exit 0
    (["loss=meta_ood", "data.outliers.probability=0"], "data.outliers.probability=0: no image ever gets an outlier"),
    (["loss=energy_oe", "data.outliers.count=0"], "data.outliers.count=[0, 0]: no object is ever pasted"),
    (["loss=void", "data.outliers.on_labels=[7,40]"], "data.outliers.on_labels=[7, 40]: [40] are not training ids"),
    (["loss=ce+aux", "loss.terms.aux.weight=nan"], "loss.terms.aux.weight=nan"),
    (["loss=ce", "loss.terms.ce.weight=0"], "every weight is 0"),
])
def test_config_errors_name_the_key_at_fault(tmp_path, overrides, key):
    # e.g. a negative weight trains the method backwards under its name, all-zero weights train nothing: refused at start
    proc = run([str(REPO / "train.py"), *overrides, "logger=none", *TINY_DATA], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and key in error_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("script, overrides, expected", [
    ("eval.py", ["ckpt_path=x", "scorer=null"], "scorer=null: the 'scorer' group needs an option"),
    ("train.py", ["model=null"], "model=null: the 'model' group needs an option"),
    ("train.py", ["optim=~"], "optim=~: the 'optim' group needs an option"),
    ("train.py", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "scorer=msp,energy"], "hydra.launcher.n_jobs=0: "),
    # a run folder that cannot be written (procfs: as unwritable as a read-only disk, even for root)
    ("train.py", ["hydra.run.dir=/proc/hazardseg-run"], "hydra.run.dir=/proc/hazardseg-run: cannot write there"),
    ("eval.py", ["-m", "ckpt_path=x", "hydra.sweep.dir=/proc/hazardseg-sweep", "scorer=msp,energy"],
     "hydra.sweep.dir=/proc/hazardseg-sweep: cannot write there"),
])
def test_command_lines_hydra_would_end_in_a_traceback_are_one_line(tmp_path, script, overrides, expected):
    # e.g. Hydra's defaults list: "Config group override must be a string or a list"; joblib: "n_jobs == 0 ..."
    proc = run([str(REPO / script), *overrides], tmp_path)
    assert proc.returncode == 2
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_preset_whose_plugin_is_missing_is_one_line(monkeypatch, capsys):
    # Hydra composes the preset, then stops with a traceback ("Unknown plugin class"): refused before it starts.
    from hazardseg import cli

    monkeypatch.setitem(cli.PLUGIN_PRESETS, "hydra/launcher=ray", ("hydra_plugins.not_installed_launcher", "pip install x"))
    with pytest.raises(SystemExit) as exit_:
        cli.refuse_missing_plugins(["train.py", "-m", "hydra/launcher=ray", "scorer=msp"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: hydra/launcher=ray needs the not_installed_launcher plugin, which is "
                                               "not installed. Fix: pip install x")
    cli.refuse_missing_plugins(["train.py", "-m", "hydra/launcher=joblib", "hydra/sweeper=hpo"])  # installed: no error
