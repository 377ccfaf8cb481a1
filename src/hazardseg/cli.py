"""Shared wrapper for the Hydra entry points: one-line errors, failed sweep jobs that don't stop the sweep."""

from __future__ import annotations

import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hazardseg.errors import HazardsegError
from hazardseg.io import atomic_write_json

# conf/hydra/launcher/{joblib,ray}.yaml are complete configs named like the plugins' own: Hydra 1.3 still
# validates them against the plugin's schema and says so at every composition; the files also work alone.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name", category=UserWarning)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = task(cfg)
    except SIGTERMException:  # pre-emption: last.ckpt was written; stop the whole sweep, non-zero like SIGTERM
        print("error: stopped by SIGTERM; re-run the same command to resume", file=sys.stderr, flush=True)
        _write_failure(cfg, "stopped by SIGTERM")
        sys.exit(128 + signal.SIGTERM)
    except Exception as err:
        user_error = isinstance(err, HazardsegError)
        message = f"{type(err).__name__}: {err}" if not user_error else str(err)
        if not user_error:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr, flush=True)
        _write_failure(cfg, message)
        if multirun:  # the sweep goes on; the sweep report marks this job failed
            return None
        sys.exit(2 if user_error else 1)
    return _headline(results)


def _write_failure(cfg: DictConfig, message: str) -> None:
    from hazardseg.store import launch_rank

    if launch_rank() != 0:
        return
    try:
        out = Path(cfg.paths.output_dir)
    except Exception:  # config too broken to know where the run dir is
        return
    atomic_write_json(out / "results.json", {"status": "failed", "error": message, "task": cfg.get("task_name")})


def _headline(results: dict[str, Any]) -> float | None:
    """Return value for Hydra sweepers (e.g. Optuna): the VALIDATION objective (``hazardseg.objective``), never a test metric."""
    value = (results.get("objective") or {}).get("value")
    return None if value is None else float(value)
