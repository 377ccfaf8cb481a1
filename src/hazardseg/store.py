"""Trained models addressed by the content hash of their *training* config.

``python train.py -m scorer=msp,maxlogit,sml`` trains once: the 2nd and 3rd job find a finished model
with the same hash and reuse it. The same folder holds ``last.ckpt`` of an unfinished training, which
``resume=auto`` continues after an interruption. A per-hash file lock keeps parallel jobs (joblib /
SLURM launchers) from training the same model twice or writing the same checkpoint concurrently; a job
that waits for it says who holds it and since when, and gives up after ``lock_timeout`` seconds.

Layout of ``<model_store>/<hash>/``: ``checkpoints/{best,last}.ckpt``, ``config.json`` (the training
config), ``DONE.json`` (the finished marker: which checkpoint to reuse), ``.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from hazardseg.console import say
from hazardseg.dist import launch_rank
from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.io import HOST, atomic_write_json, pid_alive, remove_stale_temp_files

# Top-level keys that never change what is trained.
NON_TRAINING_KEYS = frozenset(
    {"scorer", "logger", "callbacks", "hydra", "paths", "eval", "reuse", "resume", "ckpt_path", "task_name", "tags", "test_after_fit",
     "objective", "lock_timeout"}
)
# Training keys that are left out of the hash while null (fine-tuning: init_from, trainable).
OPTIONAL_TRAINING_KEYS = ("init_from", "trainable")
# Keys inside groups that change speed or display, not the trained weights.
NON_TRAINING_SUBKEYS = {
    "data": {"num_workers", "pin_memory", "persistent_workers", "skip_bad_samples", "allow_external_paths"},
    "trainer": {"enable_progress_bar", "log_every_n_steps", "enable_model_summary"},
}


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a resolved config that determines the trained weights."""
    keep = {k: v for k, v in cfg.items() if k not in NON_TRAINING_KEYS}
    container = OmegaConf.to_container(OmegaConf.create(keep), resolve=True)
    for group, keys in NON_TRAINING_SUBKEYS.items():
        if isinstance(container.get(group), dict):
            container[group] = {k: v for k, v in container[group].items() if k not in keys}
    for key in OPTIONAL_TRAINING_KEYS:  # unset: the identity of every model trained before these keys existed
        if container.get(key) is None:
            container.pop(key, None)
    data = container.get("data")
    if isinstance(data, dict) and isinstance(data.get("outliers"), dict) and not data["outliers"].get("enabled"):
        del data["outliers"]  # outlier pasting switched off: its options cannot change the weights
    return container


def config_hash(obj: Any, length: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LockTimeout(HazardsegError):
    """Another job held the model's lock for longer than ``lock_timeout``."""


class ModelEntry:
    """``<model_store>/<hash>/``: checkpoints/{best,last}.ckpt, config.json, DONE.json, .lock."""

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

    def finished_info(self) -> dict[str, Any] | None:
        """The finished marker, or None when there is none or it is unreadable (then it is dropped)."""
        if not self.done_file.is_file():
            return None
        try:
            info = json.loads(self.done_file.read_text())
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            warnings.warn(f"{self.done_file}: unreadable finished marker ({type(err).__name__}); the training is "
                          f"resumed or redone", RuntimeWarning, stacklevel=2)
            self.clear_finished()
            return None
        return info

    def finished_checkpoint(self) -> Path | None:
        """The checkpoint a finished training left for reuse, or None (no marker, or its file is gone).

        The marker names a file in ``checkpoints/`` (by name, so a moved store still works). If that
        file was deleted but ``last.ckpt`` exists, the marker is rewritten to point at ``last.ckpt``
        (said once); without any checkpoint the marker is dropped, so the training resumes or restarts."""
        info = self.finished_info()
        if info is None:
            return None
        ckpt = self.ckpt_dir / Path(str(info.get("checkpoint") or info.get("best_ckpt") or "best.ckpt")).name
        if ckpt.is_file():
            return ckpt
        if self.last_ckpt.is_file():
            print(f"[hazardseg] {ckpt} of the finished model {self.hash} is missing: using {self.last_ckpt} "
                  f"(the final epoch's weights) from now on; reuse=false retrains", file=sys.stderr, flush=True)
            self.mark_finished({**info, "checkpoint": self.last_ckpt.name, "best_ckpt": str(self.last_ckpt),
                                "note": f"{ckpt.name} was missing; {self.last_ckpt.name} is used"})
            return self.last_ckpt
        print(f"[hazardseg] the finished model {self.hash} has no checkpoint left: training it again", file=sys.stderr, flush=True)
        self.clear_finished()
        return None

    # --- the decision of a training run (made under the lock) ---------------------------------
    def reusable(self, reuse: bool, ckpt_path: str | None) -> Path | None:
        """The finished identical training to reuse instead of training (``reuse=true``, no explicit resume)."""
        return self.finished_checkpoint() if reuse and ckpt_path is None else None

    def resume_point(self, ckpt_path: str | None, resume: str = "auto") -> Path | None:
        """Where a training resumes: ``ckpt_path`` (a file, or ``last``: this entry's), else with
        ``resume=auto`` an interrupted training's ``last.ckpt`` (said), else None (from scratch)."""
        if ckpt_path == "last":
            if not self.last_ckpt.is_file():
                raise ConfigError(f"ckpt_path=last: no {self.last_ckpt} for this config. Fix: drop ckpt_path to start fresh.")
            return self.last_ckpt
        if ckpt_path is not None:
            if not Path(ckpt_path).is_file():
                raise ConfigError(f"ckpt_path={ckpt_path}: file not found. Fix: give an existing .ckpt, `last`, or null.")
            return Path(ckpt_path)
        if resume not in ("auto", "never"):
            raise ConfigError(f"resume={resume!r}: Fix: resume=auto or resume=never.")
        if resume == "auto" and self.last_ckpt.is_file():
            say(f"[hazardseg] resuming interrupted training from {self.last_ckpt} (resume=never to start over)")
            return self.last_ckpt
        return None

    def is_finished(self) -> bool:
        return self.finished_checkpoint() is not None

    def mark_finished(self, info: dict[str, Any]) -> None:
        ckpt = Path(str(info.get("checkpoint") or info.get("best_ckpt") or ""))
        if not (self.ckpt_dir / ckpt.name).is_file():  # a marker must point at a file that exists
            raise FileNotFoundError(f"finished marker for a missing checkpoint {ckpt}")
        atomic_write_json(self.done_file, {**info, "checkpoint": ckpt.name})

    def clear_finished(self) -> None:
        self.done_file.unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.dir / "config.json", config)

    def remove_stale_temp_files(self) -> None:
        """Partial checkpoints of a job killed mid-save (``.best.ckpt.<host>.<pid>.*.tmp``)."""
        for tmp in remove_stale_temp_files(self.dir):
            print(f"[hazardseg] removed {tmp} (left by a job killed while writing it)", flush=True)

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None, poll: float = 1.0) -> Iterator[None]:
        """Exclusive per-model lock; released by the OS even if the process is SIGKILLed.

        A job that has to wait prints who holds the lock and since when (the holder writes its pid, host,
        start time and command into the lock file) and raises :class:`LockTimeout` after ``timeout``
        seconds (``None`` = wait as long as it takes).

        Only the launching process (global rank 0) locks: with DDP, Lightning re-runs the script for the
        other ranks while rank 0 holds the lock inside ``fit``, so their waiting would deadlock the job.
        """
        if launch_rank() != 0:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / ".lock"
        with open(path, "a+") as handle:  # "a+": opening must not erase the holder's description
            _acquire(handle, path, f"model {self.hash}", timeout, poll)
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"pid": os.getpid(), "host": HOST, "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         "command": " ".join(sys.argv)[:300]}))
                handle.flush()
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle, path: Path, what: str, timeout: float | None, poll: float) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    started = time.monotonic()
    holder = lock_holder(path)
    limit = "no time limit" if timeout is None else f"giving up after {timeout:.0f} s (lock_timeout)"
    print(f"[hazardseg] waiting for {what}: locked by {holder} ({limit})", flush=True)
    next_note = started + 600
    while True:
        time.sleep(poll)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print(f"[hazardseg] got the lock of {what} after {time.monotonic() - started:.0f} s", flush=True)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            raise LockTimeout(
                f"{path}: {what} is still locked after {timeout:.0f} s, by {lock_holder(path)}. Fix: wait for that job "
                f"to finish, end it if it is stuck, or set lock_timeout=SECONDS (null = no limit)"
            )
        if now >= next_note:
            print(f"[hazardseg] still waiting for {what}: locked by {lock_holder(path)}", flush=True)
            next_note = now + 600


def lock_holder(path: Path) -> str:
    """Who holds a lock, from the description its holder wrote: 'pid 12 on host h since ... (command)'."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another job (not described)"
    pid, host = int(info["pid"]), info.get("host", "?")
    state = ""
    if host == HOST:
        state = ", process stopped (SIGSTOP/Ctrl-Z)" if _stopped(pid) else ("" if pid_alive(pid) else ", process gone")
    return f"pid {pid} on {host} since {info.get('since', '?')}{state} (`{info.get('command', '?')}`)"


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")
