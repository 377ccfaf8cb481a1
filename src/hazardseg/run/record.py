"""Record stage: the only writer of a run's ``results.json`` (completed, failed or interrupted), ``scorers.csv``,
``pr_curves.json``, the results table (terminal, ``<task>.log``) and the W&B summary.

:func:`recording` wraps a run's fit and test stages: it logs the hyperparameters, closes the loggers whatever
happens (a W&B run is never left open for the next sweep job) and writes the results of a completed run
atomically; :func:`write_failure` writes those of a failed or interrupted one (called by the entry point's
error handling, :func:`hazardseg.cli.run_task`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from hazardseg.console import say
from hazardseg.io import atomic_write_json, atomic_write_text
from hazardseg.loggers import close_loggers
from hazardseg.report import finish_run, save_curves
from hazardseg.run.build import Run, plain
from hazardseg.dist import launch_rank


@contextlib.contextmanager
def recording(run: Run) -> Iterator[dict[str, Any]]:
    """Close the loggers whatever happens; write results.json (atomically) only for a completed run.
    A completed run ends with its results table (terminal, <task>.log, W&B ``results`` table)."""
    results, cfg, loggers = run.results, run.cfg, run.loggers
    results.update(status="running", **_identity(run.started))
    failed = True
    try:
        for logger in loggers:
            logger.log_hyperparams(run.params or {**plain(cfg), "train_hash": results.get("train_hash")})
        yield results
        results["skipped_samples"] = dict(getattr(run.datamodule, "bad_samples", {}))
        log_skipped_samples(loggers, results["skipped_samples"], bool(getattr(run.datamodule, "skip_bad_samples", False)))
        results["status"] = "completed"
        if launch_rank() == 0:
            _finish(results, loggers)
        failed = False
    finally:
        results["wall_time_s"] = round(time.time() - run.started, 1)
        results["config"] = plain(cfg)
        results["wandb_sync"] = close_loggers(loggers, failed=failed)
        for command in results["wandb_sync"]:
            say(f"[hazardseg] W&B run logged offline; to upload it: {command}")
        if not failed and launch_rank() == 0:  # DDP ranks > 0 share rank 0's run folder
            write_results(Path(cfg.paths.output_dir), results)
        elif failed:  # what was computed before the failure, for write_failure's results.json
            _partial.update(run_dir=str(cfg.paths.output_dir), results=results)


def plain_run(cfg: DictConfig, work) -> dict[str, Any]:
    """A run without a Trainer or loggers (``predict.py backend=onnx``): ``work()``'s results in results.json, written
    as a recorded run's are (failed / interrupted: by the entry point, with what was computed)."""
    started = time.time()
    results: dict[str, Any] = {"task": cfg.get("task_name"), "status": "running", **_identity(started)}
    try:
        results.update(work())
    except BaseException:
        _partial.update(run_dir=str(cfg.paths.output_dir), results=results)
        raise
    results.update(status="completed", wall_time_s=round(time.time() - started, 1), config=plain(cfg))
    write_results(Path(cfg.paths.output_dir), results)
    return results


def _identity(started: float) -> dict[str, Any]:
    """Where and when a run runs (results.json: which process a running or killed run was)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))}


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    save_curves(run_dir, results.pop("curves", None) or {})  # pr_curves.json: for the sweep report's PR plot
    atomic_write_json(run_dir / "results.json", results)
    rows = results.get("scorers") or []
    if rows:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(k for row in rows for k in row))  # a metric that is undefined for one scorer
        writer = csv.DictWriter(buffer, fieldnames=fields)  # (no predicted component: PPV) is left out of its row
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run_dir / "scorers.csv", buffer.getvalue())


_partial: dict[str, Any] = {}  # the results of the run that just failed (set by recording, read by write_failure)


def write_failure(cfg: DictConfig, message: str, status: str, code: int) -> None:
    """results.json of a run that failed (``status="failed"``) or was interrupted, with its error and exit code,
    and what the run had computed before (e.g. the training's results when its test failed)."""
    partial_dir, partial = _partial.pop("run_dir", None), _partial.pop("results", None) or {}
    if launch_rank() != 0:
        return
    try:
        out = Path(cfg.paths.output_dir)
        kept = {k: v for k, v in partial.items() if k not in ("status", "curves")} if partial_dir == str(cfg.paths.output_dir) else {}
        atomic_write_json(out / "results.json", {**kept, "status": status, "error": message, "exit_code": code,
                                                 "task": cfg.get("task_name")})
    except Exception as err:  # config too broken to know the run dir, or the run dir is not writable
        print(f"[hazardseg] could not write results.json ({type(err).__name__}: {err})", file=sys.stderr, flush=True)


def log_skipped_samples(loggers: list, skipped: dict[str, str], enabled: bool) -> None:
    """Skipped files (``data.skip_bad_samples``) as a count for every logger and a file/reason table for
    loggers that show tables (W&B); they are also in results.json and the sweep report."""
    if not (enabled or skipped):
        return
    if skipped:
        say(f"[hazardseg] {len(skipped)} unreadable samples skipped (listed in results.json), e.g. {next(iter(skipped))}")
    for logger in loggers:
        logger.log_metrics({"data/skipped_samples": len(skipped)})
        if skipped and hasattr(logger, "log_table"):
            logger.log_table("data/skipped_samples", columns=["file", "reason"], data=[[f, r] for f, r in skipped.items()])


def _finish(results: dict[str, Any], loggers: list) -> None:
    try:
        finish_run(results, loggers)
    except Exception as err:  # a report or logger hiccup never turns a finished training into a failed job
        say(f"[hazardseg] warning: final report not complete ({type(err).__name__}: {err})")
