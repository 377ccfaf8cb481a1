"""Optuna sweeps (``hydra/sweeper=hpo``) where a failed job is a failed trial and the search stops as configured.
(Here, not in ``hazardseg``: Hydra instantiates sweepers only from the ``hydra_plugins`` namespace.)

hydra-optuna-sweeper expects a failed job to raise. hazardseg's jobs do not (a failed job writes its results.json
and returns None, so that the other jobs of a sweep still run, :mod:`hazardseg.cli`), and the plugin then logs
"Return value must be float-castable", ignores ``max_failure_rate`` and ends with ``ValueError: No trials are
completed yet`` and a traceback. This subclass hands the plugin each failed job as a failed job (its error read
from the job's results.json), so Optuna records a FAIL trial and ``max_failure_rate`` applies; when the search
stops for failures, or no trial completed, the sweep report is written, each failed job is printed with its
error, and the process exits non-zero with one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus

from hazardseg.errors import HazardsegError

try:  # the Optuna plugin is optional (pip install -e ".[cluster]"); Hydra imports this module at every start
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper
except ImportError:  # then hydra/sweeper=hpo fails in Hydra's own words (the plugin's config is missing)
    _OptunaSweeper = object


class TrialFailed(HazardsegError):
    """A sweep job that ended without an objective value."""


class _FailedJob(JobReturn):
    @property
    def return_value(self) -> Any:  # the plugin reads it once per check: no "Error executing job" line each time
        raise self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


class OptunaSweeper(_OptunaSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.max_failure_rate = self.sweeper.max_failure_rate
        self.sweeper.launcher = _FailuresAsFailures(self.sweeper.launcher)

    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        except TrialFailed:
            failed, total = self.sweeper.launcher.last_batch
            self._stop(f"Optuna stopped: {failed} of the {total} trial(s) of its last batch failed, more than "
                       f"hydra.sweeper.max_failure_rate={self.max_failure_rate}")
        except ValueError as err:
            if "No trials are completed yet" not in str(err):
                raise
            self._stop("Optuna: no trial completed, so there is no best value")

    def _stop(self, message: str) -> None:
        from hazardseg.cli import USER_ERROR, _sweep_exit, report_sweep_failures
        from hazardseg.report import report_sweep

        report_sweep(self.sweep_dir)
        report_sweep_failures(self.sweep_dir)  # one line per failed job (overrides, error); sets the exit status
        print(f"error: {message} (failed jobs: above and in {self.sweep_dir / 'sweep_report.md'})",
              file=sys.stderr, flush=True)
        sys.exit(_sweep_exit["code"] or USER_ERROR)  # 2: every failure a user error, 1: one was internal


class _FailuresAsFailures:
    """The sweeper's launcher, whose job returns say FAILED for a job that returned no objective."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher
        self.last_batch = (0, 0)  # (failed, launched)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = [_failed(ret) if _no_value(ret) else ret for ret in self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)]
        self.last_batch = (sum(isinstance(ret, _FailedJob) for ret in returns), len(returns))
        return returns


def _no_value(ret: JobReturn) -> bool:
    return ret.status == JobStatus.COMPLETED and ret._return_value is None


def _failed(ret: JobReturn) -> JobReturn:
    results = _results(ret)
    job = _select(ret, "hydra.job.num", "?")
    overrides = " ".join(ret.overrides or [])
    if results.get("status") not in (None, "completed"):
        why = results.get("error") or results["status"]
    else:
        why = "it returned no objective value (is the config's `objective` a validation metric this run logs?)"
    failed = _FailedJob(**{k: getattr(ret, k) for k in ("overrides", "cfg", "hydra_cfg", "working_dir", "task_name")})
    failed.status = JobStatus.FAILED
    failed.return_value = TrialFailed(f"job {job} ({overrides}): {why}")
    return failed


def _results(ret: JobReturn) -> dict[str, Any]:
    try:  # the job's run folder (every launcher returns the job's resolved Hydra config)
        return json.loads((Path(_select(ret, "hydra.runtime.output_dir", "")) / "results.json").read_text())
    except (OSError, ValueError):  # no results.json: the job crashed before writing it
        return {}


def _select(ret: JobReturn, key: str, default: Any) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(ret.hydra_cfg, key, default=None) if ret.hydra_cfg is not None else None
    return default if value is None else value
