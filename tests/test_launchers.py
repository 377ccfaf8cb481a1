"""Sweeps through real launcher / sweeper plugins (hydra-joblib-launcher, hydra-submitit-launcher,
hydra-ray-launcher, hydra-optuna-sweeper), W&B Sweeps composition, and the model-store lock across processes.

The plugins come with `pip install -e ".[cluster]"` (joblib, submitit and the Optuna sweeper also with
`.[dev]`); a test whose plugin is missing is skipped and says which package to install."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, REPO, TINY_DATA

TESTS = Path(__file__).resolve().parent
# Tiny data with the DEFAULT loader settings (data.num_workers=2, persistent workers): the joblib bug lived there.
TINY_DEFAULT_WORKERS = [o for o in TINY_DATA if not o.startswith("data.num_workers")]
TINY_RUN = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "model.decoder_channels=32", "eval.fit_batches=2",
            "eval.panels=1", "logger=none"]


def plugin(module: str, package: str):
    return pytest.importorskip(module, reason=f"{package} not installed: pip install -e '.[cluster]'")


def hydra_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def sweep(args: list[str], cwd: Path, timeout: int = 900) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    found = list((cwd / "outputs" / "train" / "multiruns").glob("*")) if (cwd / "outputs").is_dir() else []
    return proc, (found[0] if found else cwd)


def job_results(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((j / "results.json").read_text()) for j in jobs]


# ---------------------------------------------------------------------------- presets compose
def test_slurm_preset_sizes_the_job_for_ddp():
    plugin("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
    cfg = hydra_cfg(["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu", "trainer=ddp"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 4  # one task (DDP rank) per GPU ...
    assert cfg.trainer.devices == -1 and cfg.trainer.strategy == "ddp"  # ... and DDP uses every GPU of the job
    assert {"cpus_per_task", "mem_gb", "timeout_min", "array_parallelism", "partition", "max_num_timeout"} <= set(launcher)

    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string  # what sbatch would receive (nothing is submitted)

    params = {k: v for k, v in OmegaConf.to_container(cfg.hydra.launcher, resolve=True).items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout", "array_parallelism")}
    equivalent = SlurmExecutor._equivalence_dict()  # hydra-submitit's generic names -> sbatch names, as submitit maps them
    params = {equivalent.get(k, k): v for k, v in params.items()}
    params["mem"] = f"{params['mem']}GB"
    script = _make_sbatch_string(command="python train.py", folder="/tmp/hazardseg-sbatch-preview", **params)
    for line in ("--gpus-per-node=4", "--ntasks-per-node=4", "--cpus-per-task=8", "--mem=64GB", "--time=1440", "--partition=gpu", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, line


def test_ray_joblib_and_optuna_presets_compose():
    plugin("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
    plugin("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")
    plugin("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher")
    assert hydra_cfg(["hydra/launcher=joblib"]).hydra.launcher.n_jobs == 2
    ray = hydra_cfg(["hydra/launcher=ray"]).hydra.launcher
    # a job asks for what its trainer uses: no GPU with trainer=cpu (the preset used to ask 1 GPU + 4 CPUs and
    # hang on a machine without a GPU), the trainer's devices with trainer=gpu
    assert ray._target_.endswith("RayLauncher") and ray.ray.remote.num_gpus == 0 and ray.ray.init.address is None
    assert 1 <= ray.ray.remote.num_cpus <= os.cpu_count()
    gpu = hydra_cfg(["hydra/launcher=ray", "trainer=gpu", "trainer.devices=2", "data.num_workers=0"]).hydra.launcher
    assert (gpu.ray.remote.num_gpus, gpu.ray.remote.num_cpus) == (2, 1)
    hpo = hydra_cfg(["hydra/sweeper=hpo", "+hparams_search=loss_weights", "loss=ce+aux"]).hydra.sweeper
    assert hpo._target_.endswith("OptunaSweeper") and hpo.direction == "maximize" and hpo.sampler._target_.endswith("TPESampler")
    assert set(hpo.params) == {"optim.optimizer.lr", "loss.terms.aux.weight"}
    cfg = hydra_cfg(["loss=ce+aux"])
    assert all(OmegaConf.select(cfg, key) is not None for key in hpo.params)  # every searched key exists
    if OmegaConf.select(cfg, "data.outliers") is None:
        pytest.skip("conf/hparams_search/outliers.yaml searches data.outliers.probability: no data.outliers config in this tree")
    out = hydra_cfg(["hydra/sweeper=hpo", "+hparams_search=outliers"]).hydra.sweeper.params
    assert OmegaConf.select(cfg, "data.outliers.probability") is not None and "data.outliers.probability" in out


def test_wandb_sweep_yaml_drives_train_with_hydra_overrides(make_cfg):
    spec = yaml.safe_load((REPO / "sweeps" / "wandb_sweep.yaml").read_text())
    assert spec["program"] == "train.py" and "${args_no_hyphens}" in spec["command"]
    assert spec["metric"]["name"] == "objective"  # the summary key every run writes (hazardseg.report.finish_run)
    # the arguments a W&B agent would pass: `key=value` for one draw of every parameter
    draws = {k: v.get("value", (v.get("values") or [v.get("min")])[-1]) for k, v in spec["parameters"].items()}
    cfg = make_cfg([f"{k}={v}" for k, v in draws.items()])
    for key, value in draws.items():
        composed = OmegaConf.select(cfg, key)
        assert composed == value or key in ("loss", "logger"), key
    assert "aux" in cfg.loss.terms and cfg.objective == "val/miou"


# ---------------------------------------------------------------------------- locks and workers
def _hold_lock(store: str, log: str) -> None:
    from hazardseg.store import ModelEntry

    with ModelEntry(store, "samehash").lock():
        with open(log, "a") as f:
            f.write(f"enter {time.time()}\n")
        time.sleep(0.5)
        with open(log, "a") as f:
            f.write(f"exit {time.time()}\n")


def test_model_store_lock_is_exclusive_across_processes(tmp_path):
    log = tmp_path / "log.txt"
    procs = [mp.get_context("spawn").Process(target=_hold_lock, args=(str(tmp_path / "store"), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events == ["enter", "exit"] * 3  # never two holders at once


def _loader_batches(root: str) -> int:
    os.environ["HAZARDSEG_CACHE"] = root
    from hazardseg.data import SyntheticStreetHazardsDataModule

    dm = SyntheticStreetHazardsDataModule(n_train=4, n_val=2, n_test=2, width=64, height=36, image_size=[32, 56],
                                          batch_size=2, num_workers=2, persistent_workers=True)
    dm.prepare_data()
    dm.setup("fit")
    return sum(1 for _ in dm.val_dataloader())


def test_dataloader_workers_inside_joblib_workers(tmp_path):
    """Regression: DataLoader workers inside loky workers died with "'Process' object has no attribute 'env'"."""
    joblib = pytest.importorskip("joblib")
    out = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(_loader_batches)(str(tmp_path)) for _ in range(2))
    assert out == [1, 1]


# ---------------------------------------------------------------------------- real sweeps
@pytest.mark.slow
def test_joblib_sweep_with_default_data_settings(tmp_path):
    plugin("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
    proc, sweep_dir = sweep(["hydra/launcher=joblib", "scorer=msp,maxlogit", *TINY_DEFAULT_WORKERS, *TINY_RUN], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_results(sweep_dir)
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert sorted(j["reused_checkpoint"] for j in jobs) == [False, True]  # trained once, across processes
    assert len({j["pid"] for j in jobs}) == 2  # two loky worker processes
    rows = list(csv.DictReader((sweep_dir / "sweep_report.csv").open()))
    assert [r["scorer"] for r in rows] == ["msp", "maxlogit"]


@pytest.mark.slow
def test_slurm_preset_sweep_on_submitit_local_executor(tmp_path):
    plugin("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
    args = ["hydra/launcher=slurm", "hydra.launcher._target_=hydra_plugins.hazardseg_test_launcher.SlurmPresetOnLocalExecutor", "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.tasks_per_node=1", "hydra.launcher.partition=gpu", "scorer=msp,maxlogit", *TINY_DEFAULT_WORKERS, *TINY_RUN]
    proc, sweep_dir = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_results(sweep_dir)
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert sorted(j["reused_checkpoint"] for j in jobs) == [False, True]
    assert json.loads((sweep_dir / "slurm_only_params.json").read_text())["partition"] == "gpu"
    assert list(sweep_dir.glob(".submitit/*/*_log.out"))  # submitit's per-job logs
    assert (sweep_dir / "sweep_report.md").is_file()


@pytest.mark.slow
def test_ray_sweep_runs_jobs_in_parallel(tmp_path):
    plugin("ray", "ray")
    plugin("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher")
    args = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "hydra.launcher.ray.remote.num_cpus=1",
            "hydra.launcher.ray.remote.num_gpus=0", "+hydra.launcher.ray.init.include_dashboard=false",
            "scorer=msp,maxlogit", *TINY_DEFAULT_WORKERS, *TINY_RUN]
    proc, sweep_dir = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_results(sweep_dir)
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert sorted(j["reused_checkpoint"] for j in jobs) == [False, True]
    assert len({j["pid"] for j in jobs}) == 2
    spans = [(time.mktime(time.strptime(j["started_at"], "%Y-%m-%dT%H:%M:%S")), j["wall_time_s"]) for j in jobs]
    (s0, w0), (s1, w1) = spans
    assert s0 < s1 + w1 + 1 and s1 < s0 + w0 + 1  # the two jobs overlapped in time


def test_ray_request_no_node_can_meet_is_one_line_before_the_sweep(tmp_path):
    plugin("ray", "ray")
    plugin("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher")
    args = ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
            "hydra.launcher.ray.remote.num_gpus=1", "scorer=msp,maxlogit", *TINY_DEFAULT_WORKERS, *TINY_RUN]
    proc, sweep_dir = sweep(args, tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.launcher.ray.remote asks 1 CPU, 1 GPU per job, but no node") or \
        last.startswith("error: hydra.launcher.ray.remote asks 2 CPU, 1 GPU per job, but no node"), proc.stderr[-3000:]
    assert "at most" in last and "0 GPU" in last and not [p for p in sweep_dir.glob("[0-9]*")]  # no job started


def test_unfit_request_reads_every_node():
    from hazardseg.launchers import job_cpus, job_gpus, unfit_request

    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert unfit_request({"num_cpus": 4, "num_gpus": 2}, nodes) is None  # the second node fits
    assert unfit_request({"num_cpus": 8, "num_gpus": 0}, nodes) is None
    assert "at most 8 CPU, 2 GPU" in unfit_request({"num_cpus": 6, "num_gpus": 1}, nodes)  # no one node has both
    assert "1 custom" in unfit_request({"num_cpus": 1, "resources": {"custom": 1}}, nodes)  # dead nodes don't count
    assert (job_gpus("cpu", 4), job_gpus("gpu", 2), job_gpus("gpu", [0, 1, 2]), job_cpus(0)) == (0, 2, 3, 1)


def _failing_optuna(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    plugin("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")
    return sweep(["hydra/sweeper=hpo", "data=streethazards", f"data.root={tmp_path / 'missing'}", "logger=none", *extra], tmp_path)


def test_optuna_trial_that_fails_is_a_failed_trial_and_max_failure_rate_stops_the_search(tmp_path):
    # A failed job used to be "Return value must be float-castable", max_failure_rate ignored, every trial run,
    # then "ValueError: No trials are completed yet" with a traceback.
    proc, sweep_dir = _failing_optuna(tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: Optuna stopped: 1 of the 1 trial(s) of its last batch failed, more than "
                                "hydra.sweeper.max_failure_rate=0.0"), lines[-1]
    assert any(line.startswith("[hazardseg] job 0 (optim.optimizer.lr=") and "folder not found" in line for line in lines)
    assert [p.name for p in sweep_dir.glob("[0-9]*")] == ["0"]  # the search stopped after the first batch
    assert (sweep_dir / "sweep_report.md").is_file()


def test_optuna_sweep_without_a_completed_trial_is_one_line(tmp_path):
    proc, sweep_dir = _failing_optuna(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1.0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Optuna: no trial completed, so there is no best value")
    assert sorted(p.name for p in sweep_dir.glob("[0-9]*")) == ["0", "1"]  # max_failure_rate=1: every trial ran
    assert "Failed experiment: job 1 (" in proc.stdout + proc.stderr  # Optuna recorded them as failed trials


@pytest.mark.slow
def test_optuna_search_optimises_validation_never_test(tmp_path):
    plugin("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")
    args = ["hydra/sweeper=hpo", "hydra.sweeper.n_trials=3", "trainer=debug", "data.val_outliers.enabled=true",
            "objective=val/msp/aupr", "scorer=[msp,sml]", *TINY_DATA, "logger=none", "eval.panels=0"]
    proc, sweep_dir = sweep(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_results(sweep_dir)
    assert len(jobs) == 3 and all(j["status"] == "completed" for j in jobs)
    lrs = {json.dumps(j["config"]["optim"]["optimizer"]["lr"]) for j in jobs}
    assert len(lrs) == 3  # three different learning rates were tried
    values = [j["objective"]["value"] for j in jobs]
    assert all(j["objective"]["metric"] == "val/msp/aupr" and j["objective"]["split"] == "val" for j in jobs)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))
    assert all(best["best_value"] != pytest.approx(j["metrics"]["test/msp/aupr"]) for j in jobs)
