"""Experiment loggers. ``conf/logger/*.yaml`` instantiate Lightning loggers; W&B gets a subclass that
resolves ``mode=auto`` and closes its run per job.

W&B pitfalls handled here:
- Lightning's ``WandbLogger(offline=True)`` sets ``WANDB_MODE`` process-wide, which leaks into later
  multirun jobs; we pass ``mode=`` to ``wandb.init`` instead.
- No account or no network must never hang: ``mode=auto`` picks offline unless credentials exist and
  the server answers within 3 s, and ``init_timeout`` bounds the rest.
- One W&B run per job: :func:`close_loggers` finishes it (also after a failed job). Lightning's own
  ``finalize`` runs after ``fit`` and must not end the run before the test metrics arrive.

What a W&B project receives (designed as the ablation dashboard; read back in tests/test_wandb.py):
- config: the full resolved config *flattened* (``data.batch_size``, ``optim.optimizer.lr``, ...: every
  key a runs-table column / parallel-coordinates axis; lists as strings), ``choice.<group>`` = the option
  chosen in each config group (``choice.loss: ce+aux``, ``choice.scorer: msp``), ``train_hash`` and, for
  runs that evaluate a model trained elsewhere (eval.py, reused models), ``trained_in.run_id``;
- ``job_type`` train / eval, ``group`` = the multirun (sweep) folder, ``tags`` from the config;
- summaries from ``define_metric``: best (max) val mIoU and val anomaly metrics, min train loss;
  ``objective`` (the sweeper's value, validation only) and every test metric;
- a ``results`` Table: one row per (run, scorer) with AUPR / AUROC / FPR95 / mIoU and the run's
  choices, so W&B's merged table of a sweep's runs is the ablation table;
- ``test/segmentation``: ``wandb.Image`` inputs with prediction / ground-truth masks and class labels
  (W&B's mask overlay), ``test/panels`` (the PNG panels), PR/ROC curves per scorer.
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
from hazardseg.metrics.names import ANOMALY


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

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The config flattened to one level (``a.b.c`` keys) plus ``choice.<group>`` keys, and the
        summaries that make the runs table show best values instead of last ones."""
        params = dict(params) if isinstance(params, dict) else dict(vars(params))
        flat = flatten_config(params)
        for group, option in hydra_choices().items():  # eval runs pass the model's choices (loss, model, data) already
            flat.setdefault(f"choice.{group}", option)
        self.experiment.config.update(flat, allow_val_change=True)
        self.define_summaries(list((params.get("scorer") or {}).keys()))

    def define_summaries(self, scorers: list[str]) -> None:
        """``define_metric`` summaries: best val mIoU (not the last epoch's), best val anomaly metrics."""
        run = self.experiment
        if not hasattr(run, "define_metric"):
            return
        step = "trainer/global_step"  # Lightning's x axis for every metric; a named define_metric replaces the glob
        best = {"val/miou": "max", "val/pixel_acc": "max", "train/loss": "min"}
        for name in scorers:
            best.update({f"val/{name}/{key}": "max" if up else "min" for key, up in ANOMALY.items()})
        for key, summary in best.items():
            run.define_metric(key, step_metric=step, summary=summary)

    def log_results(self, columns: list[str], rows: list[list[Any]], summary: dict[str, Any]) -> None:
        """The run's (run, scorer) rows as the ``results`` Table, and headline values in the run summary."""
        import wandb

        if rows:
            self.experiment.log({"results": wandb.Table(columns=columns, data=rows)})
        for key, value in summary.items():
            self.experiment.summary[key] = value

    def log_segmentation(self, key: str, samples: list[dict[str, Any]], class_labels: dict[int, str]) -> None:
        """Inputs with ``prediction`` / ``ground_truth`` masks (W&B's interactive mask overlay).
        ``samples``: dicts with ``image`` (H,W,3 uint8), ``prediction`` and ``ground_truth`` (H,W ints), ``caption``."""
        import wandb

        images = [
            wandb.Image(s["image"], caption=s.get("caption"), masks={
                "prediction": {"mask_data": s["prediction"], "class_labels": class_labels},
                "ground_truth": {"mask_data": s["ground_truth"], "class_labels": class_labels},
            })
            for s in samples
        ]
        self.experiment.log({key: images})

    def log_figures(self, figures: dict[str, Path], table: tuple[list[str], list[list[Any]]] | None = None) -> None:
        """PNG files as images under their keys (the sweep report's figures), and optionally a table."""
        import wandb

        payload: dict[str, Any] = {key: wandb.Image(str(path)) for key, path in figures.items()}
        if table is not None:
            payload["sweep_report"] = wandb.Table(columns=table[0], data=table[1])
        self.experiment.log(payload)

    def run_ref(self) -> dict[str, str] | None:
        """Identity of this W&B run (stored in checkpoints so that eval runs can point to it)."""
        if self._experiment is None or not getattr(self._experiment, "id", None):
            return None
        run = self._experiment
        return {"run_id": run.id, "project": str(getattr(run, "project", "") or ""), "name": str(getattr(run, "name", "") or "")}

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


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"batch_size": 8}}`` -> ``{"data.batch_size": 8}``; lists become strings (one axis value each)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value if value != {} else None
    return flat


def hydra_choices() -> dict[str, str]:
    """The option chosen in each config group of the current Hydra job (``{"loss": "ce+aux", ...}``),
    without Hydra's own groups; empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    out = {str(k): str(v) for k, v in hc.runtime.choices.items() if not str(k).startswith("hydra") and v is not None}
    groups = {d.name for src in hc.runtime.config_sources if src.schema == "file" and Path(src.path).is_dir()
              for d in Path(src.path).iterdir() if d.is_dir()}
    for override in hc.overrides.task:  # Hydra leaves list selections (scorer=[msp,sml]) out of runtime.choices
        key, _, value = override.lstrip("+~").partition("=")
        if key in groups and key not in out and value.startswith("[") and value.endswith("]"):
            out[key] = "[" + ", ".join(v.strip() for v in value[1:-1].split(",")) + "]"
    return out


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
