"""Stop an outlier-exposure training whose batches never hold a pasted outlier pixel.

A method that learns from pasted outliers (Meta-OoD, energy OE, PEBAL, void, ...) with nothing ever pasted trains
plain segmentation under the method's name and exits 0. The configurations that can never paste are refused at
start (:meth:`hazardseg.data.outliers.PasteOutliers.never_pastes`); what only shows in the data (cut-outs whose
alpha never reaches the labelling threshold, ``on_labels`` classes absent from the images with
``fallback=skip``, a source that yields nothing usable) is caught here: after enough batches that a working
configuration would have pasted at least once with probability > 1 - 1e-6, zero outlier pixels is an error.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from hazardseg.data.transforms import OUTLIER_LABEL
from hazardseg.errors import ConfigError

MISS_PROBABILITY = 1e-6  # chance that a working configuration is refused (no paste by bad luck)


class OutlierWatch(L.Callback):
    """Args:
        batches: check after this many training batches (None: from ``data.outliers.probability`` and the
            batch size, so that a working configuration passes with probability 1 - 1e-6).
    """

    def __init__(self, batches: int | None = None):
        if batches is not None and (not isinstance(batches, int) or isinstance(batches, bool) or batches < 1):
            raise ConfigError(f"callbacks.outlier_watch.batches={batches!r}: expected an int >= 1 or null")
        self.batches = batches
        self.seen = self.with_outliers = 0
        self.checked = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = self.with_outliers = 0
        loss, paste = getattr(pl_module, "loss", None), getattr(trainer.datamodule, "outliers", None)
        # Nothing to watch: no outlier term, or pasting is off (refused at start, hazardseg.run.checks)
        self.checked = not getattr(loss, "uses_outliers", False) or paste is None
        self.paste = paste

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict, batch_idx: int) -> None:
        if self.checked:
            return
        self.seen += 1
        self.with_outliers += int(bool((batch["mask"] == OUTLIER_LABEL).any()))
        if self.seen < self.limit(batch["mask"].shape[0]):
            return
        self.checked = True
        # every rank reaches this batch together (same number of steps): one decision for all
        total = trainer.strategy.reduce(torch.tensor(float(self.with_outliers), device=pl_module.device), reduce_op="sum")
        if float(total) == 0:
            key = getattr(self.paste, "key", "data.outliers")
            raise ConfigError(
                f"{key}: no pasted outlier pixel in {self.seen} training batch(es), but "
                f"loss.terms.{_outlier_term(pl_module)} learns from them ({self.paste!r}). Check the cut-outs ({key}.source: "
                f"their alpha must reach the labelling threshold), {key}.on_labels (present in the images?) and "
                f"{key}.fallback, or train with loss=ce"
            )

    def limit(self, batch_size: int) -> int:
        if self.batches is not None:
            return self.batches
        p = float(getattr(self.paste, "probability", 0.5))
        if p >= 1:
            return 1
        # (1 - p) ** (n * batch_size) < MISS_PROBABILITY
        return max(1, math.ceil(math.log(MISS_PROBABILITY) / (max(1, batch_size) * math.log1p(-p))))


def _outlier_term(pl_module: L.LightningModule) -> str:
    return next(name for name, term in pl_module.loss.terms.items() if getattr(term, "uses_outliers", False))
