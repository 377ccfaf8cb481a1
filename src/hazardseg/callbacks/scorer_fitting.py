"""Fit the statistics of scorers that need them (SML, Mahalanobis, ...) before the test loop (and before
``Trainer.validate``, where ``predict.py`` calibrates thresholds).

Runs inside the Trainer (``on_test_start``), so the fitting pass uses the trainer's device, precision
and DDP: each rank reads its shard of the training split and the scorer sums its accumulators over
ranks. Statistics are cached in ``cache_dir`` under a key made of everything they depend on: the
network's weights (SHA-256 of its state), the data that feeds the fit (``datamodule.fingerprint``:
dataset, root, file list, image size and transforms), the number of batches and their size, the
precision, the scorer's config and its ``fit_version`` (:mod:`hazardseg.cache`). A cache that cannot
be read is refitted and one that cannot be written is a warning, never a lost evaluation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

from hazardseg.cache import cache_key, load_torch, save_torch
from hazardseg import signals


class ScorerFitting(L.Callback):
    """Args:
        fit_batches: batches of the training split to fit on (``None`` = all; 1 under ``fast_dev_run``).
        cache_dir: folder of cached statistics (``None`` = no cache).
    """

    def __init__(self, fit_batches: int | None = None, cache_dir: str | None = None):
        self.fit_batches = fit_batches
        self.cache_dir = None if cache_dir in (None, "") else Path(cache_dir)
        self.datamodule = None  # the model's data when the Trainer runs without one (predict.py's Trainer.predict)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_test_start(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # Trainer.validate (predict.py calibrates thresholds there), not training epochs
            self.on_test_start(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending = {name: s for name, s in pl_module.scorers.items() if s.requires_fit}
        if not pending:
            return
        # the model's training data; another dataset (e.g. a test-only benchmark) may be the test data
        source = trainer.datamodule or self.datamodule
        datamodule = getattr(source, "scorer_fit_data", None) or source
        max_batches = int(trainer.fast_dev_run) if trainer.fast_dev_run else self.fit_batches  # a smoke run stays a smoke run
        common = {"weights": weights_fingerprint(pl_module.net), "data": datamodule.fingerprint("fit"), "batches": max_batches,
                  "batch_size": datamodule.batch_size, "precision": str(trainer.precision), "world_size": trainer.world_size}
        for name, scorer in pending.items():
            path = self._cache_file(name, scorer, common)
            loaded = path is not None and _load(scorer, path, pl_module.device, name)
            # One decision for all ranks (rank 0's): a rank that fits alone would wait forever in `reduce`.
            if trainer.strategy.broadcast(loaded, src=0):
                if not loaded:
                    raise RuntimeError(f"{path}: readable on rank 0 but not on rank {trainer.global_rank}; is the model store on a shared filesystem?")
                _say(trainer, f"scorer '{name}': reusing statistics {path}")
                continue
            _say(trainer, f"scorer '{name}': fitting statistics on the training split")
            # Inside the test loop's inference mode: fit with plain no_grad so the statistics are normal
            # tensors that later code (and load_state_dict) may update.
            with torch.inference_mode(False), torch.no_grad():
                loader = _sharded(datamodule.fit_dataloader(), trainer)
                scorer.to(pl_module.device).fit(_outputs(trainer, pl_module, loader, max_batches),
                                                reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
            if path is not None and trainer.is_global_zero:
                save_torch(path, {"state_dict": scorer.state_dict()})

    def _cache_file(self, name: str, scorer, common: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        material = {**common, "scorer": getattr(scorer, "hparams", repr(scorer)), "fit_version": scorer.fit_version}
        return self.cache_dir / f"{name}-{cache_key(material)}.pt"


def weights_fingerprint(net: torch.nn.Module) -> str:
    """SHA-256 of a network's state (names, dtypes, shapes and bytes): equal weights, equal key."""
    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _outputs(trainer: L.Trainer, pl_module: L.LightningModule, loader: DataLoader, max_batches: int | None) -> Iterator[dict]:
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        signals.stop_point("scorer-fitting")  # SIGTERM: stop before the next batch, nothing cached
        batch = trainer.strategy.batch_to_device(batch)
        with trainer.precision_plugin.forward_context():
            outputs = pl_module(batch["image"])
        yield {**outputs, "mask": batch["mask"]}


def _sharded(loader: DataLoader, trainer: L.Trainer) -> DataLoader:
    """Under DDP each rank fits on its own share of the training split."""
    if trainer.world_size <= 1:
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
    return type(loader)(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                        multiprocessing_context=loader.multiprocessing_context)


def _load(scorer, path: Path, device, name: str) -> bool:
    payload = load_torch(path)
    if payload is None:
        return False
    try:
        scorer.load_state_dict(payload["state_dict"])
    except Exception as err:  # a cache file of another scorer layout: refit
        import warnings

        warnings.warn(f"{path}: cached statistics do not fit scorer '{name}' ({type(err).__name__}); refitting", RuntimeWarning, stacklevel=2)
        return False
    scorer.to(device)
    return True


def _say(trainer: L.Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(f"[hazardseg] {message}", flush=True)
