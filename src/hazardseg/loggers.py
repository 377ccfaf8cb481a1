"""Experiment loggers from ``cfg.logger``: W&B (online when possible, offline otherwise), CSV, none.

W&B pitfalls handled here:
- Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE`` process-wide, which leaks into later
  multirun jobs; we pass ``mode=`` to ``wandb.init`` instead.
- No account or no network must never hang: ``mode=auto`` picks offline unless credentials exist and
  the server answers within 3 s, and ``init_timeout`` bounds the rest.
- One W&B run per job: ``finish_loggers`` calls ``wandb.finish()`` (also after a failed job).
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig

from hazardseg.errors import ConfigError

KNOWN_LOGGERS = ("wandb", "csv")


def build_loggers(logger_cfg: DictConfig | None, run_dir: Path, run_name: str, group: str | None, config: dict) -> list:
    loggers = []
    for name, opts in (logger_cfg or {}).items():
        if name == "wandb":
            loggers.append(wandb_logger(opts, run_dir, run_name, group, config))
        elif name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(run_dir), name=opts.get("name", "csv"), version=""))
        else:
            raise ConfigError(f"logger.{name}: unknown logger. Fix: logger=wandb|csv|none|all.")
    return loggers


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


def wandb_logger(opts: DictConfig, run_dir: Path, run_name: str, group: str | None, config: dict):
    from lightning.pytorch.loggers import WandbLogger
    import wandb

    mode = wandb_mode(str(opts.get("mode", "auto")))
    if mode not in ("online", "offline", "disabled", "shared"):
        raise ConfigError(f"logger.wandb.mode={mode!r}: Fix: one of auto, online, offline, disabled.")
    logger = WandbLogger(
        project=opts.get("project", "hazardseg"),
        entity=opts.get("entity"),
        name=run_name,
        group=opts.get("group") or group,
        save_dir=str(run_dir),
        log_model=bool(opts.get("log_model", False)) and mode == "online",
        config=config,
        mode=mode,
        settings=wandb.Settings(init_timeout=float(opts.get("init_timeout", 60)), silent=True),
        reinit="finish_previous",
    )
    logger.hazardseg_mode = mode
    return logger


def finish_loggers(loggers: list, failed: bool = False) -> list[str]:
    """Close every logger (one W&B run per job); return the `wandb sync` commands for offline runs."""
    messages = []
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            run = logger.experiment
            if getattr(logger, "hazardseg_mode", "") == "offline" and getattr(run, "dir", None):
                messages.append(f"wandb sync {Path(run.dir).parent}")
            run.finish(exit_code=1 if failed else 0)
        elif hasattr(logger, "finalize"):
            logger.finalize("failed" if failed else "success")
    return messages


def log_summary(loggers: list, results: dict[str, Any], curves: dict[str, dict], table_rows: list[dict]) -> None:
    """Final metrics as W&B summary, the scorer x metric table, and PR/ROC curves as W&B line plots."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            if hasattr(logger, "log_metrics"):
                logger.log_metrics({k: v for k, v in results.items() if isinstance(v, (int, float))})
            continue
        import wandb

        run = logger.experiment
        run.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})
        if table_rows:
            columns = list(table_rows[0])
            run.log({"test/scorers": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in table_rows])})
        for name, curve in curves.items():
            pr = wandb.Table(columns=["recall", "precision"], data=list(zip(curve["recall"].tolist(), curve["precision"].tolist())))
            roc = wandb.Table(columns=["fpr", "tpr"], data=list(zip(curve["fpr"].tolist(), curve["tpr"].tolist())))
            run.log({
                f"test/{name}/pr_curve": wandb.plot.line(pr, "recall", "precision", title=f"PR curve ({name})"),
                f"test/{name}/roc_curve": wandb.plot.line(roc, "fpr", "tpr", title=f"ROC curve ({name})"),
            })


def log_panels(loggers: list, panels: list) -> None:
    """Qualitative test panels (Input | GT | Pred | Overlay | Confidence | Error | Anomaly) as W&B images."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and panels:
            import wandb

            logger.experiment.log({"test/panels": [wandb.Image(p, caption=f"{n} mIoU {100 * m:.1f}%") for n, p, m in panels]})


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

