"""Hydra callback writing the sweep report into the multirun folder when a multirun ends, whatever
the launcher (basic, joblib, submitit/SLURM, Ray) or sweeper (basic, Optuna).

See :mod:`hazardseg.report`: ``sweep_report.{csv,md,json}`` with one row per (job, scorer) (failed and
missing jobs included, so a failed job is visible instead of silently absent) and PNG plots; the
sweep's table is printed. ``python -m hazardseg.report <multirun dir>`` writes the same on demand.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hazardseg.cli import report_sweep_failures
from hazardseg.report import report_sweep

__all__ = ["SweepReport"]


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            try:
                report_sweep(sweep_dir)
            except SIGTERMException:  # the jobs' results are all there; only the report is missing
                print(f"error: sweep report interrupted by SIGTERM; write it with `python -m hazardseg.report {sweep_dir}`",
                      file=sys.stderr, flush=True)
                sys.exit(128 + signal.SIGTERM)
            report_sweep_failures(sweep_dir)  # prints each failed job and its error; the process then exits non-zero
