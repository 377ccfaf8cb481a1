"""Callbacks and plugins that keep long runs safe: atomic checkpoints, a checkpoint on SIGTERM (SLURM
pre-emption), and RNG state in checkpoints so a resumed run matches an uninterrupted one."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hazardseg.io import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temp file in the target folder, fsync, then ``os.replace``: a crash never
    leaves a truncated ``last.ckpt`` for ``resume=auto`` to choke on, and a full disk is one line naming the
    checkpoint (:class:`~hazardseg.io.DiskFullError`) with the previous one intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


class RNGStateCheckpoint(L.Callback):
    """Save/restore python, numpy and torch RNG states (as weights_only-safe types)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint["hazardseg_rng"] = {
            "python": list(random.getstate()[1]),
            "python_pos": random.getstate()[2],
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "torch": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get("hazardseg_rng")
        if not state:
            return
        random.setstate((3, tuple(state["python"]), state["python_pos"]))
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
        torch.set_rng_state(state["torch"])


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM (what SLURM sends before pre-emption) Lightning raises SIGTERMException inside the loop,
    on SIGINT (Ctrl-C) KeyboardInterrupt; we write ``last.ckpt`` before the process exits so that
    re-running the command (``resume=auto``) continues."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit" and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
            signal = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT"
            print(f"[hazardseg] {signal}: saved {self.path}; re-run the same command to resume.", flush=True)


class ModelCheckpoint(_ModelCheckpoint):
    """Lightning's ModelCheckpoint for the model store, except that
    - a ``fast_dev_run`` never writes ``last.ckpt`` (Lightning's ``on_train_end`` saves it regardless,
      which would drop a smoke run's weights into the model store);
    - no "directory exists and is not empty" warning: a store folder holds the previous attempt's
      checkpoints by design (resume, ``reuse=false``);
    - ``last.ckpt`` is the latest epoch, always. Lightning >= 2.6 writes it only at steps where a top-k
      checkpoint is saved, so with ``save_top_k=1`` it stays a copy of ``best.ckpt`` whenever val mIoU does
      not improve, and ``resume=auto`` after a crash would silently redo every epoch since the best one."""

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath) -> None:  # name-mangled private hook
        return None

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer) -> None:
        # Skipped (by Lightning's own test) when this step was already saved, in smoke runs and outside fit.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
