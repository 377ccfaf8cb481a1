"""Full disks and SIGTERM at every stage a run spends time in outside Lightning's loops, injected with
``tests/faults.py`` into the commands a user types: one line naming the file (or exit 143 and status
"interrupted"), nothing half-written, and the same command then succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_folders import smiyc_folder
from conftest import REPO, TINY_DATA, model_entries
from hazardseg.signals import STAGES

FAULTS = Path(__file__).resolve().parent / "faults.py"
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "eval.panels=0"]
SIGTERM_EXIT = 128 + signal.SIGTERM


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """Two labelled SMIYC frames large enough that their submission files (~0.4 MB) outgrow the disk below."""
    frames = [(f"validation000{i}", (1024, 512), True) for i in range(2)]
    return smiyc_folder(tmp_path_factory.mktemp("bench") / "dataset_AnomalyTrack", frames, blobs=2)


def _run(cwd: Path, script: str, args: list[str], *faults: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(FAULTS), *faults, str(REPO / script), *args] if faults else [sys.executable, str(REPO / script), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _last_results(cwd: Path, task: str) -> dict:
    runs = sorted((cwd / "outputs" / task / "runs").glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text())


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[-1]


def _benchmark_args(checkpoint: str, bench: Path) -> list[str]:
    return [f"ckpt_path={checkpoint}", "data=smiyc_anomaly", f"++data.root={bench}", "++data.image_size=[64,112]",
            "++data.num_workers=0", *QUIET]


# ---------------------------------------------------------------------------------------------- full disk
def test_full_disk_while_writing_submission_files_is_one_line(checkpoint, bench, tmp_path):
    args = [*_benchmark_args(checkpoint, bench), "scorer=msp", "submission=true"]
    proc = _run(tmp_path, "eval.py", args, "--file-size-limit", "200000")
    assert proc.returncode == 2, proc.stderr[-3000:]  # HDF5 writing to disk itself ended in a segfault (139)
    error = _error_line(proc)
    assert ".hdf5: cannot write it (file size limit exceeded)" in error and "free space" in error
    results = _last_results(tmp_path, "eval")
    assert results["status"] == "failed" and results["error"] == error.removeprefix("error: ")
    assert results["train_hash"] and results["checkpoint"] == checkpoint  # what the run knew is kept
    assert not _temp_files(tmp_path / "outputs")
    for written in (tmp_path / "outputs").rglob("*.hdf5"):  # files written before the disk filled up are whole
        from hazardseg.metrics import read_score_map

        assert read_score_map(written).shape == (512, 1024)
    again = _run(tmp_path, "eval.py", args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((tmp_path / "outputs").rglob("validation000*.hdf5"))) >= 2


def test_full_disk_under_the_model_store_then_the_rerun_trains(tmp_path):
    args = [*TINY_DATA, *QUIET, "trainer.max_epochs=1", "model.decoder_channels=16", "scorer=msp"]
    proc = _run(tmp_path, "train.py", args, "--file-size-limit", "10000000")  # a checkpoint is ~58 MB
    assert proc.returncode == 2, proc.stderr[-3000:]  # was: RuntimeError "unexpected pos" with a traceback
    error = _error_line(proc)
    store = tmp_path / "outputs" / "models"
    assert f"{store}/" in error and ".ckpt: cannot write it (file size limit exceeded)" in error
    (entry,) = model_entries(store)
    assert not (entry / "DONE.json").exists() and not list(entry.rglob("*.ckpt")) and not _temp_files(tmp_path)
    again = _run(tmp_path, "train.py", args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _last_results(tmp_path, "train")["status"] == "completed" and (entry / "DONE.json").is_file()


# ---------------------------------------------------------------------------------------------- SIGTERM
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "prediction-writing"])  # that one: the predict test below
def test_sigterm_at_a_stage_outside_lightnings_loops_stops_the_run(checkpoint, bench, tmp_path, stage):
    """SIGTERM used to be logged and ignored there: the run ended 40 s later with exit 0, "completed"."""
    args = {
        "scorer-fitting": [f"ckpt_path={checkpoint}", "scorer=sml", "eval.fit_batches=2", *QUIET],
        "benchmark-metrics": [*_benchmark_args(checkpoint, bench), "scorer=msp"],
        "submission-export": [*_benchmark_args(checkpoint, bench), "scorer=msp", "submission=true"],
        "report": [f"ckpt_path={checkpoint}", "scorer=msp", *QUIET],
    }[stage]
    proc = _run(tmp_path, "eval.py", args, "--signal-at", stage)
    assert proc.returncode == SIGTERM_EXIT, proc.stderr[-3000:]
    assert _error_line(proc) == "error: stopped by SIGTERM; re-run the same command to resume"
    results = _last_results(tmp_path, "eval")
    assert results["status"] == "interrupted" and results["exit_code"] == SIGTERM_EXIT
    assert not _temp_files(tmp_path / "outputs")
    if stage == "scorer-fitting":  # no statistics cached from an interrupted fit
        assert not list((tmp_path / "outputs").rglob("scorer_stats/*.pt"))
        again = _run(tmp_path, "eval.py", args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "fitting statistics on the training split" in again.stdout
        assert _last_results(tmp_path, "eval")["status"] == "completed"


@pytest.mark.parametrize("signum", ["INT", "TERM"])
def test_predict_interrupted_keeps_what_it_wrote_readable(checkpoint, tmp_path, signum):
    import av

    from test_predict import _video

    video = _video(tmp_path / "clip.mp4", frames=8)
    args = [f"ckpt_path={checkpoint}", f"input={video}", "predict.threshold=-0.5", "trainer.enable_progress_bar=false"]
    proc = _run(tmp_path, "predict.py", args, "--signal-at", "prediction-writing", "--signal", signum)
    assert proc.returncode == {"INT": 130, "TERM": SIGTERM_EXIT}[signum], proc.stderr[-3000:]
    assert "predict stopped after" in proc.stdout + proc.stderr
    (run,) = (tmp_path / "outputs" / "predict" / "runs").iterdir()
    rows = (run / "index.csv").read_text().splitlines()
    assert rows[0] == "frame,scorer,file,flagged_share,max_score,threshold"
    assert all((run / row.split(",")[2]).is_file() for row in rows[1:])
    assert not _temp_files(run) and json.loads((run / "results.json").read_text())["status"] == "interrupted"
    if (run / "anomaly_msp.mp4").exists():  # closed on the way out: a playable video of the frames written
        with av.open(str(run / "anomaly_msp.mp4")) as container:
            assert 1 <= sum(1 for _ in container.decode(video=0)) <= 8
