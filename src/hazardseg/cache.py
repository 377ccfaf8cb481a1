"""Derived results cached in the model store (scorer statistics, class distributions).

Every cache file is named by a key of *everything* its content depends on (:func:`cache_key`), so a
changed input is a cache miss, never a stale hit. A cache is only an optimisation: an unreadable
entry is recomputed and an unwritable folder is a warning; neither ever loses a result.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from hazardseg.io import atomic_torch_save, atomic_write_json, remove_stale_temp_files


def cache_key(material: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able description of the inputs (key order does not matter)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:length]


def load_json(path: Path) -> Any | None:
    return _load(path, lambda p: json.loads(p.read_text()))


def load_torch(path: Path) -> Any | None:
    import torch

    return _load(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))


def save_json(path: Path, obj: Any) -> bool:
    return _save(path, lambda: atomic_write_json(path, obj))


def save_torch(path: Path, obj: Any) -> bool:
    return _save(path, lambda: atomic_torch_save(obj, path))


def _load(path: Path, reader) -> Any | None:
    if not path.is_file():
        return None
    try:
        return reader(path)
    except Exception as err:  # truncated, corrupt, foreign or unsafe file: recompute it
        warnings.warn(f"{path}: unreadable cache file ({type(err).__name__}); recomputing it", RuntimeWarning, stacklevel=3)
        return None


def _save(path: Path, write) -> bool:
    try:
        if path.parent.is_dir():
            remove_stale_temp_files(path.parent)  # left by writers killed mid-write
        write()
        return True
    except OSError as err:
        warnings.warn(f"cannot write the cache file {path} ({err.strerror or type(err).__name__}); results are unaffected, "
                      f"but it is recomputed next time. Fix: make {path.parent} writable or set paths.model_store",
                      RuntimeWarning, stacklevel=3)
        return False
