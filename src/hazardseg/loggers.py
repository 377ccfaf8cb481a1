"""Experiment loggers. ``conf/logger/*.yaml`` instantiate Lightning loggers; W&B gets a subclass that
resolves ``mode=auto`` and closes its run per job.

W&B pitfalls handled here:
- Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE`` process-wide, which leaks into later
  multirun jobs; we pass ``mode=`` to ``wandb.init`` instead.
- No account or no network must never hang: ``mode=auto`` picks offline unless credentials exist and
  the server answers within 3 s, and ``init_timeout`` bounds the rest.
- One W&B run per job: :func:`close_loggers` finishes it (also after a failed job). Lightning's own
  ``finalize`` runs after ``fit`` and must not end the run before the test metrics arrive.
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

from hazardseg.errors import ConfigError


def wandb_mode(requested: str) -> str:
    """Resolve ``auto`` to online/offline without ever blocking for more than a few seconds."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return {"dryrun": "offline", "run": "online"}.get(os.environ["WANDB_MODE"], os.environ["WANDB_MODE"])
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(base_url).hostname or "api.wandb.ai"
    if not _has_wandb_credentials(host):
        return "offline"
    return "online" if _reachable(host, urlparse(base_url).port or 443) else "offline"


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger with ``mode: auto``, a default run name / sweep group from Hydra, and
    helpers the callbacks use (``log_curves``); ``close`` finishes the run."""

    def __init__(self, project: str = "hazardseg", mode: str = "auto", name: str | None = None, group: str | None = None,
                 save_dir: str = ".", init_timeout: float = 60, log_model: bool = False, **kwargs: Any):
        import wandb

        mode = wandb_mode(str(mode))
        if mode not in ("online", "offline", "disabled", "shared"):
            raise ConfigError(f"logger.wandb.mode={mode!r}: Fix: one of auto, online, offline, disabled.")
        self.mode = mode
        super().__init__(
            project=project, name=name or hydra_run_name(), group=group or hydra_sweep_group(), save_dir=save_dir,
            log_model=bool(log_model) and mode == "online", mode=mode, reinit="finish_previous",
            settings=wandb.Settings(init_timeout=float(init_timeout), silent=True), **kwargs,
        )

    def log_curves(self, prefix: str, curves: dict) -> None:
        """PR and ROC curves (``AnomalyMetrics.curves()``) as W&B line plots."""
        import wandb

        pr = wandb.Table(columns=["recall", "precision"], data=list(zip(curves["recall"].tolist(), curves["precision"].tolist())))
        roc = wandb.Table(columns=["fpr", "tpr"], data=list(zip(curves["fpr"].tolist(), curves["tpr"].tolist())))
        self.experiment.log({
            f"{prefix}/pr_curve": wandb.plot.line(pr, "recall", "precision", title=f"PR curve ({prefix})"),
            f"{prefix}/roc_curve": wandb.plot.line(roc, "fpr", "tpr", title=f"ROC curve ({prefix})"),
        })

    def close(self, failed: bool = False) -> str | None:
        """Finish the run; return the ``wandb sync`` command of an offline run."""
        if self._experiment is None:
            return None
        run = self.experiment
        command = f"wandb sync {Path(run.dir).parent}" if self.mode == "offline" and getattr(run, "dir", None) else None
        run.finish(exit_code=1 if failed else 0)
        return command


def close_loggers(loggers: list, failed: bool = False) -> list[str]:
    """Close every logger (one W&B run per job); return the `wandb sync` commands for offline runs."""
    commands = []
    for logger in loggers:
        if hasattr(logger, "close"):
            command = logger.close(failed=failed)
            if command:
                commands.append(command)
        else:
            logger.finalize("failed" if failed else "success")
    return commands


def hydra_run_name() -> str | None:
    """``<task>[<command-line overrides>]`` of the current Hydra job, e.g. ``train[loss=ce+aux]``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    overrides = ",".join(o for o in hc.overrides.task if not o.startswith(("logger", "hydra")))
    return f"{hc.job.name}[{overrides}]" if overrides else hc.job.name


def hydra_sweep_group() -> str | None:
    """Jobs of one multirun share a W&B group named after the sweep folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def _has_wandb_credentials(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
