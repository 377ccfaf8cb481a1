"""The binary anomaly mask's threshold of every scorer, from the model's validation split (``predict.py``).

Runs inside ``Trainer.validate`` (the trainer's device, precision and DDP): every known-class pixel of the
validation split feeds :class:`~hazardseg.metrics.calibration.ThresholdAtFPR`, and the threshold is the score that
flags ``fpr`` of them. Cached like scorer statistics: under a key of the network's weights, the validation data
(``datamodule.fingerprint("validate")``), the scorer's config and statistics, and ``fpr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from hazardseg.cache import cache_key, load_json, save_json
from hazardseg.callbacks.base import EvaluationCallback
from hazardseg.callbacks.scorer_fitting import weights_fingerprint
from hazardseg.maps import resize
from hazardseg.metrics.calibration import ThresholdAtFPR


class ThresholdCalibration(EvaluationCallback):
    """Args:
        fpr: share of known-class validation pixels the threshold flags (0.05: 5%).
        cache_dir: folder of cached thresholds (``None`` = no cache).
        batches: validation batches to calibrate on (``None`` = all).
        fit_batches: training batches scorer statistics are fitted on (``ScorerFitting``'s), part of the cache key.
    """

    results_key = "thresholds"  # scorer -> {threshold, achieved_fpr, pixels, fpr, cached}

    def __init__(self, fpr: float = 0.05, cache_dir: str | None = None, batches: int | None = None, fit_batches: int | None = None):
        ThresholdAtFPR(fpr)  # the one check of fpr
        self.fpr, self.batches, self.fit_batches = float(fpr), batches, fit_batches
        self.cache_dir = None if cache_dir in (None, "") else Path(cache_dir)
        self.found: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, ThresholdAtFPR] = {}
        self.paths: dict[str, Path | None] = {}

    def cached(self, pl_module: L.LightningModule, datamodule) -> bool:
        """Read every scorer's threshold from the cache; True when none is left to calibrate."""
        self.found, self.paths = {}, {}
        common = {"weights": weights_fingerprint(pl_module.net), "data": datamodule.fingerprint("validate"), "fpr": self.fpr,
                  "batches": self.batches}
        for name, scorer in pl_module.scorers.items():
            identity = {"scorer": getattr(scorer, "hparams", repr(scorer))}
            if getattr(scorer, "requires_fit", False):  # its statistics: a function of the weights and of these
                identity.update(fit_data=datamodule.fingerprint("fit"), fit_batches=self.fit_batches, version=scorer.fit_version)
            path = None if self.cache_dir is None else self.cache_dir / f"{name}-{cache_key({**common, **identity})}.json"
            self.paths[name] = path
            hit = load_json(path) if path is not None else None
            if hit is not None:
                self.found[name] = {**hit, "cached": str(path)}
        return len(self.found) == len(pl_module.scorers)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "validate":  # epochs of a training: not ours
            return
        self.pending = {name: ThresholdAtFPR(self.fpr).to(pl_module.device) for name in pl_module.scorers if name not in self.found}

    def on_validation_batch_end(self, trainer, pl_module, outputs: dict[str, Any], batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.pending or (self.batches is not None and batch_idx >= self.batches):
            return
        mask = batch["mask"]
        known = (mask >= 0) & (mask < pl_module.num_classes)  # ignore, anomaly and outlier values are not known classes
        for name, metric in self.pending.items():
            scores = resize(pl_module.scorers[name](outputs["outputs"]), mask.shape[-2:])
            metric.update(scores[known])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, metric in self.pending.items():
            result = metric.compute()
            self.found[name] = {**result, "cached": None}
            path = self.paths.get(name)
            if path is not None and trainer.is_global_zero:
                save_json(path, result)
        self.pending = {}

    def results(self) -> dict[str, dict[str, Any]]:
        return self.found
