"""Shared wrapper for the Hydra entry points: one-line errors, a results.json for every failed or interrupted
run, failed sweep jobs that don't stop the sweep but make it exit non-zero.

Exit status: 0 done; 2 a user-fixable error (one ``error:`` line); 1 an internal error (traceback);
130 SIGINT (Ctrl-C); 143 SIGTERM. A multirun runs every job, then exits 2 (or 1 if a job failed with an
internal error) when any job failed, after printing which and why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hazardseg import signals
from hazardseg.errors import HazardsegError
from hazardseg.io import job_overrides
from hazardseg.run.record import write_failure  # the only writer of results.json

# conf/hydra/launcher/{joblib,ray}.yaml are complete configs named like the plugins' own: Hydra 1.3 still
# validates them against the plugin's schema and says so at every composition; the files also work alone.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name", category=UserWarning)
# A fine-tune with `trainable` keeps its frozen BatchNorm layers in eval mode on purpose (their statistics stay
# the trained model's, SegmentationNetwork.set_trainable); Lightning warns about any module in eval mode at fit start.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
USER_ERROR, INTERNAL_ERROR = 2, 1
_sweep_exit = {"code": 0}  # set when a multirun ends with failed jobs (see report_sweep_failures)


def run_task(task: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = task(cfg)
    except SIGTERMException:  # pre-emption: last.ckpt was written; stop the whole sweep, non-zero like SIGTERM
        _stop(cfg, "stopped by SIGTERM", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        _stop(cfg, "interrupted by SIGINT (Ctrl-C)", 128 + signal.SIGINT)
    except SystemExit as err:
        # Lightning answers Ctrl-C inside fit/test by a graceful shutdown ending in sys.exit(1), raised
        # while handling the KeyboardInterrupt: treat it as the interruption it is.
        if isinstance(err.__context__, KeyboardInterrupt):
            _stop(cfg, "interrupted by SIGINT (Ctrl-C)", 128 + signal.SIGINT)
        raise
    except Exception as err:
        user_error = isinstance(err, HazardsegError)
        message = f"{type(err).__name__}: {err}" if not user_error else str(err)
        if not user_error:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr, flush=True)
        code = USER_ERROR if user_error else INTERNAL_ERROR
        write_failure(cfg, message, "failed", code)
        if multirun:  # the sweep goes on; it exits non-zero at the end (report_sweep_failures)
            _sweep_exit["code"] = _worst(_sweep_exit["code"], code)
            return None
        sys.exit(code)
    return _headline(results)


def _stop(cfg: DictConfig, message: str, code: int) -> None:
    """SIGINT / SIGTERM: write the run's results.json and end the process (and the sweep)."""
    with signals.ignored():  # a second SIGTERM must not cut results.json short
        print(f"error: {message}; re-run the same command to resume", file=sys.stderr, flush=True)
        write_failure(cfg, message, "interrupted", code)
    sys.exit(code)


def _headline(results: dict[str, Any]) -> float | None:
    """Return value for Hydra sweepers (e.g. Optuna): the VALIDATION objective (``hazardseg.objective``), never a test metric."""
    value = (results.get("objective") or {}).get("value")
    return None if value is None else float(value)


def _worst(a: int, b: int) -> int:
    """Exit status of a sweep: 2 when every failure was a user error, 1 as soon as one was internal."""
    codes = {a, b} - {0}
    return 0 if not codes else (USER_ERROR if codes == {USER_ERROR} else INTERNAL_ERROR)


# ---------------------------------------------------------------------------- sweeps
def report_sweep_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    """Print every failed job of a finished multirun (from its results.json) and set the exit status.

    Reads the job folders rather than the launcher's return values, so it works for every launcher
    (jobs in other processes or on other machines). Called by :class:`hazardseg.sweep.SweepReport`."""
    job_dirs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    overrides = {job_dir: job_overrides(job_dir) for job_dir in job_dirs}
    shared = set.intersection(*map(set, overrides.values())) if len(job_dirs) > 1 else set()  # name jobs by what varies
    failed = []
    for job_dir in job_dirs:
        results = _read(job_dir / "results.json")
        status = results.get("status", "missing") if results else "missing"
        if status == "completed":
            continue
        error = results.get("error", "") if results else "no results.json (the job was killed, or crashed before it started)"
        failed.append({"job": int(job_dir.name), "overrides": " ".join(o for o in overrides[job_dir] if o not in shared),
                       "error": error, "exit_code": (results or {}).get("exit_code", INTERNAL_ERROR)})
    code = 0
    for job in failed:
        print(f"[hazardseg] job {job['job']} ({job['overrides'] or 'no overrides'}) failed: {job['error']}", file=sys.stderr, flush=True)
        code = _worst(code, job["exit_code"] if job["exit_code"] in (USER_ERROR, INTERNAL_ERROR) else INTERNAL_ERROR)
    if failed:
        print(f"[hazardseg] {len(failed)} job(s) of the sweep failed; exit status {code}", file=sys.stderr, flush=True)
    _sweep_exit["code"] = code
    return failed


# Config groups a run cannot do without: `<group>=null` on the command line would otherwise end in a traceback from
# Hydra's defaults list ("Config group override must be a string or a list").
REQUIRED_GROUPS = ("scorer", "model", "optim", "trainer", "paths", "callbacks", "hydra/launcher", "hydra/sweeper")


def refuse_null_groups(argv: list[str], conf_dir: Path) -> None:
    """One line and exit 2 for ``<group>=null`` (or ``~``/``None``) of a group that needs an option, and for
    command-line values a launcher would only refuse with a traceback (``hydra.launcher.n_jobs=0``)."""
    for arg in argv[1:]:
        group, _, value = arg.lstrip("+").partition("=")
        if group in REQUIRED_GROUPS and value.strip().lower() in ("null", "none", "~") and not (conf_dir / group / f"{value}.yaml").is_file():
            options = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            print(f"error: {group}={value}: the '{group}' group needs an option, e.g. {group}={options[0] if options else '...'} "
                  f"(options: {', '.join(options)})", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR)
        if group == "hydra.launcher.n_jobs" and value.strip() == "0":  # joblib: "n_jobs == 0 in Parallel has no meaning"
            print("error: hydra.launcher.n_jobs=0: the joblib launcher needs n_jobs >= 1 (parallel jobs) or -1 (one per "
                  "core)", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR)


# The presets of optional Hydra plugins: the plugin's module and how to install it. Without it, Hydra stops with a
# traceback ("Unknown plugin class") after composing the config.
PLUGIN_PRESETS = {
    "hydra/launcher=ray": ("hydra_plugins.hydra_ray_launcher", 'pip install -e ".[cluster]" && pip install --no-deps hydra-ray-launcher'),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", 'pip install -e ".[cluster]"'),
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", 'pip install -e ".[cluster]"'),
    "hydra/sweeper=hpo": ("hydra_plugins.hydra_optuna_sweeper", 'pip install -e ".[cluster]"'),
}


def refuse_missing_plugins(argv: list[str]) -> None:
    """One line and exit 2 when the command line selects a launcher / sweeper preset whose plugin is not installed."""
    import importlib.util

    for arg in argv[1:]:
        module, install = PLUGIN_PRESETS.get(arg.lstrip("+"), (None, None))
        if module and importlib.util.find_spec(module) is None:
            print(f"error: {arg.lstrip('+')} needs the {module.split('.')[-1]} plugin, which is not installed. Fix: {install}",
                  file=sys.stderr, flush=True)
            sys.exit(USER_ERROR)


def refuse_unwritable_run_dir(argv: list[str]) -> None:
    """One line and exit 2 when the folder Hydra is about to create the run in cannot be written (a read-only disk,
    a path under /proc, ...): Hydra itself would stop with a traceback before the run starts."""
    multirun = any(arg in ("-m", "--multirun") for arg in argv[1:])
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [arg.split("=", 1)[1] for arg in argv[1:] if arg.lstrip("+").startswith(f"{key}=")]
    folder = Path(given[-1]) if given and "${" not in given[-1] else Path("outputs")  # the default's fixed part
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        where = f"{key}={folder}" if given else f"the run folder {folder.resolve()} (under the current directory)"
        print(f"error: {where}: cannot write there ({err.strerror}). Fix: run from a writable folder or set "
              f"{key}=/a/writable/folder", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR)


def launch(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function; after a multirun with failed jobs, exit with their status."""
    refuse_null_groups(sys.argv, Path(sys.argv[0]).resolve().parent / "conf")
    refuse_missing_plugins(sys.argv)
    refuse_unwritable_run_dir(sys.argv)
    signals.install()  # SIGTERM honoured outside Lightning's loops too (fitting, benchmark metrics, reports)
    main()
    if _sweep_exit["code"]:
        sys.exit(_sweep_exit["code"])


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- eval.py command line
_DATA_KEY = re.compile(r"^data\.[A-Za-z_]")


def allow_data_overrides(argv: list[str]) -> list[str]:
    """``data.root=/x`` -> ``++data.root=/x`` for eval.py.

    eval.py's config has no data group (the checkpoint brings its data config; ``data: {}`` collects
    overrides), and Hydra refuses to add a key to a struct config without ``+``. Rewriting before Hydra
    parses the command line makes ``python eval.py ckpt_path=... data.root=/path`` work as written,
    sweeps included; ``++`` both adds and overrides, so it also works once a data group is selected
    (``data=<benchmark> data.root=...``). Group selections (``data=...``) are left alone."""
    return [f"++{arg}" if _DATA_KEY.match(arg) else arg for arg in argv]
