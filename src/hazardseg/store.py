"""Trained models addressed by the content hash of their *training* config.

``python train.py -m scorer=msp,maxlogit,sml`` trains once: the 2nd and 3rd job find a finished model
with the same hash and reuse it. The same folder holds ``last.ckpt`` of an unfinished training, which
``resume=auto`` continues after an interruption. A per-hash file lock keeps parallel jobs (joblib /
SLURM launchers) from training the same model twice or writing the same checkpoint concurrently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from hazardseg.io import atomic_write_json

# Top-level keys that never change what is trained.
NON_TRAINING_KEYS = frozenset(
    {"scorer", "logger", "callbacks", "hydra", "paths", "eval", "reuse", "resume", "ckpt_path", "task_name", "tags", "test_after_fit",
     "objective"}
)
# Keys inside groups that change speed or display, not the trained weights.
NON_TRAINING_SUBKEYS = {
    "data": {"num_workers", "pin_memory", "persistent_workers", "skip_bad_samples"},
    "trainer": {"enable_progress_bar", "log_every_n_steps", "enable_model_summary"},
}


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a resolved config that determines the trained weights."""
    keep = {k: v for k, v in cfg.items() if k not in NON_TRAINING_KEYS}
    container = OmegaConf.to_container(OmegaConf.create(keep), resolve=True)
    for group, keys in NON_TRAINING_SUBKEYS.items():
        if isinstance(container.get(group), dict):
            container[group] = {k: v for k, v in container[group].items() if k not in keys}
    data = container.get("data")
    if isinstance(data, dict) and isinstance(data.get("outliers"), dict) and not data["outliers"].get("enabled"):
        del data["outliers"]  # outlier pasting switched off: its options cannot change the weights
    return container


def launch_rank() -> int:
    """Global rank of this process as set by the DDP launcher (Lightning, torchrun, SLURM); 0 otherwise."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def config_hash(obj: Any, length: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ModelEntry:
    """``<model_store>/<hash>/``: checkpoints/{best,last}.ckpt, config.json, DONE.json."""

    def __init__(self, store_root: str | Path, train_hash: str):
        self.hash = train_hash
        self.dir = Path(store_root) / train_hash
        self.ckpt_dir = self.dir / "checkpoints"

    @property
    def best_ckpt(self) -> Path:
        return self.ckpt_dir / "best.ckpt"

    @property
    def last_ckpt(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    @property
    def done_file(self) -> Path:
        return self.dir / "DONE.json"

    def is_finished(self) -> bool:
        return self.done_file.is_file() and self.best_ckpt.is_file()

    def finished_info(self) -> dict[str, Any]:
        return json.loads(self.done_file.read_text())

    def mark_finished(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.done_file, info)

    def clear_finished(self) -> None:
        self.done_file.unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.dir / "config.json", config)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive per-model lock; released by the OS even if the process is SIGKILLed.

        Only the launching process (global rank 0) locks: with DDP, Lightning re-runs the script for the
        other ranks while rank 0 holds the lock inside ``fit``, so their waiting would deadlock the job.
        """
        if launch_rank() != 0:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
