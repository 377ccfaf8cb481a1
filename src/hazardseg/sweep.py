"""Hydra callback writing the sweep report into the multirun folder when a multirun ends, whatever
the launcher (basic, joblib, submitit/SLURM, Ray) or sweeper (basic, Optuna).

See :mod:`hazardseg.report`: ``sweep_report.{csv,md,json}`` with one row per (job, scorer) (failed and
missing jobs included, so a failed job is visible instead of silently absent) and PNG plots; the
sweep's table is printed. ``python -m hazardseg.report <multirun dir>`` writes the same on demand.
"""

from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hazardseg.cli import report_sweep_failures
from hazardseg.console import say
from hazardseg.report import report_sweep

__all__ = ["SweepReport"]


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            try:
                written = report_sweep(sweep_dir)
                if written:
                    send_to_wandb(config, sweep_dir, written)
            except SIGTERMException:  # the jobs' results are all there; only the report is missing
                print(f"error: sweep report interrupted by SIGTERM; write it with `python -m hazardseg.report {sweep_dir}`",
                      file=sys.stderr, flush=True)
                sys.exit(128 + signal.SIGTERM)
            report_sweep_failures(sweep_dir)  # prints each failed job and its error; the process then exits non-zero


def send_to_wandb(config: DictConfig, sweep_dir: Path, written: dict[str, Path]) -> None:
    """The sweep's figures and table as one W&B run (job type ``sweep-report``) in the group of the sweep's jobs,
    when the sweep logs to W&B (``logger=wandb``); offline without an account, as every run. A problem here is a
    warning: the report is on disk already."""
    from omegaconf import OmegaConf

    spec = OmegaConf.select(config, "logger.wandb")
    if spec is None or str(spec.get("_target_", "")) != "hazardseg.loggers.WandbLogger":
        return
    try:
        from hazardseg.loggers import WandbLogger

        logger = WandbLogger(project=spec.project, mode=spec.mode, entity=spec.get("entity"), name=f"sweep-report {sweep_dir.name}",
                             group=sweep_dir.name, job_type="sweep-report", tags=list(OmegaConf.select(config, "tags") or []),
                             save_dir=str(sweep_dir), init_timeout=spec.get("init_timeout", 60))
        rows = list(csv.reader(written["csv"].open()))
        figures = {f"sweep/{key.removeprefix('png_')}": path for key, path in written.items() if key.startswith("png_")}
        logger.log_figures(figures, (rows[0], rows[1:]) if rows else None)
        command = logger.close()
        say(f"[hazardseg] sweep report sent to W&B (group {sweep_dir.name})" + (f"; logged offline, to upload it: {command}" if command else ""))
    except Exception as err:  # noqa: BLE001 - the report is written; W&B is a copy of it
        say(f"[hazardseg] warning: sweep report not sent to W&B ({type(err).__name__}: {err})")
