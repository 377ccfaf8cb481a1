"""The value ``train.py`` returns to Hydra sweepers (Optuna) and W&B Sweeps: a VALIDATION metric.

``objective`` (top-level config key) names it:

* ``val/miou`` (default): validation mIoU of the selected (best) checkpoint: the score that
  ``ModelCheckpoint`` recorded for it, or a validation pass over it when none was recorded (smoke runs);
* ``val/<scorer>/{aupr,auroc,fpr95}``: pooled anomaly metric of ``<scorer>`` on the validation anomaly
  proxy (``data.val_outliers``: outliers pasted into val images, :mod:`hazardseg.data.proxy`), from a
  validation pass over the selected checkpoint. The scorer must be configured (``scorer=...``) and need
  no fitted statistics (see :mod:`hazardseg.callbacks.validation_anomaly`);
* ``null``: return nothing.

The test split is never an objective: a search that maximises test metrics reports tuned-on-test numbers.
"""

from __future__ import annotations

import logging
from typing import Any

from hazardseg.errors import ConfigError
from hazardseg.metrics.names import ANOMALY

METRICS = tuple(ANOMALY)
log = logging.getLogger(__name__)


def check_objective(objective: str | None, module, datamodule) -> None:
    """Raise a one-line ConfigError (with the fix) for an objective that is not a computable validation metric."""
    if objective is None:
        return
    name = str(objective)
    if not name.startswith("val/"):
        raise ConfigError(f"objective={name}: sweepers may only optimise validation metrics, never the test split. "
                          f"Fix: objective=val/miou or objective=val/<scorer>/aupr (with data.val_outliers.enabled=true).")
    if name == "val/miou":
        return
    parts = name.split("/")
    if len(parts) != 3 or parts[2] not in METRICS:
        raise ConfigError(f"objective={name}: unknown validation metric. Fix: objective=val/miou or val/<scorer>/<{'|'.join(METRICS)}>.")
    scorer = parts[1]
    if scorer not in module.scorers:
        raise ConfigError(f"objective={name}: scorer '{scorer}' is not configured (scorers: {sorted(module.scorers)}). "
                          f"Fix: add it, e.g. scorer={scorer}, or name a configured scorer.")
    if getattr(module.scorers[scorer], "requires_fit", False):
        raise ConfigError(f"objective={name}: '{scorer}' needs fitted statistics, which validation does not compute each epoch. "
                          f"Fix: use a scorer without fitting (msp, maxlogit, entropy, energy) as the objective.")
    if getattr(datamodule, "val_outliers", None) is None:
        raise ConfigError(f"objective={name}: the validation split has no anomalies to score. Fix: data.val_outliers.enabled=true "
                          f"(outliers pasted into every val image: a proxy split).")


def validation_objective(objective: str | None, trainer, module, datamodule, trained: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"metric", "value", "split": "val"}`` for the selected checkpoint (module holds its weights)."""
    if objective is None:
        return None
    name = str(objective)
    value = (trained or {}).get("best_val_miou") if name == "val/miou" else None
    if value is None:
        (metrics,) = trainer.validate(module, datamodule=datamodule, verbose=False) or [{}]
        value = metrics.get(name)
    if value is None:
        log.warning("objective %s was not computed (empty validation split?)", name)
    return {"metric": name, "value": None if value is None else float(value), "split": "val"}
