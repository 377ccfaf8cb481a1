"""DataLoader worker processes inside launcher workers (joblib/loky, Ray, submitit).

Inside a loky worker (``hydra/launcher=joblib``) the process-wide default multiprocessing context is
loky's own; a DataLoader that uses the default then fails with ``AttributeError: 'Process' object has
no attribute 'env'`` (torch's worker Process handed to loky's Popen). Naming the platform's standard
start method explicitly keeps parallel data loading. A *daemonic* process may not have children at all
(Python's rule): there the loader falls back to ``num_workers=0`` with a one-line notice.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from typing import Any

log = logging.getLogger(__name__)
_noticed: set[str] = set()


def loader_workers(num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` that work in the current process."""
    if num_workers == 0:
        return {"num_workers": 0}
    if mp.current_process().daemon:
        _notice("daemon", f"[hazardseg] this job runs in a daemonic process, which may not start DataLoader workers: "
                          f"loading data in the main process (data.num_workers={num_workers} -> 0)")
        return {"num_workers": 0}
    standard = mp.get_all_start_methods()  # the platform's default first
    if mp.get_start_method(allow_none=True) not in (None, *standard):  # e.g. 'loky' inside joblib workers
        return {"num_workers": num_workers, "multiprocessing_context": mp.get_context(standard[0])}
    return {"num_workers": num_workers}


def _notice(key: str, message: str) -> None:
    if key not in _noticed:  # once per process, not once per dataloader
        _noticed.add(key)
        log.warning(message)
