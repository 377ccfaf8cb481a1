"""The results channel of evaluation callbacks.

An evaluation callback works inside the Trainer's test loop (it reads what ``Segmenter.test_step`` returns)
and hands back what it produced -- beyond the metrics it logs through the module -- under its own key:
``results_key`` and :meth:`EvaluationCallback.results`. The run's test stage
(:func:`hazardseg.run.evaluation.test`) collects them with :func:`collect_results`; the record stage is the
only writer of ``results.json``. Nobody probes a callback's attributes.

:class:`Background` is the worker thread in which callbacks take per-frame work off the test loop's critical path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import lightning as L
import torch


class EvaluationCallback(L.Callback):
    results_key: ClassVar[str] = ""

    def results(self) -> Any:
        """What this callback produced in the last test run (JSON-able), or None for nothing."""
        return None


def collect_results(callbacks: Iterable[L.Callback]) -> dict[str, Any]:
    """``{results_key: results()}`` of every evaluation callback that produced something."""
    found: dict[str, Any] = {}
    for callback in callbacks:
        if isinstance(callback, EvaluationCallback):
            value = callback.results()
            if value:
                found[callback.results_key] = value
    return found


class Background:
    """One worker thread running submitted calls in order, at most ``depth`` of them pending (``depth`` 0: each
    call runs at once in the caller's thread): ``submit`` waits for the oldest when the queue is full (bounded
    memory: each call holds one frame's maps) and re-raises its error in the caller's thread. A call runs in the
    caller's inference mode (thread-local in PyTorch: the test loop's metric states are inference tensors, which
    only inference mode may update).

    ``single_threaded``: the worker's torch operations run on one core. Beside a loop whose forward pass takes every
    core, a worker that starts a thread team of its own for each operation oversubscribes the cores (``eval.py
    data=smiyc_anomaly scorer=all`` on 2 cores: 48-49 -> 46.4-46.7 s). predict.py's writer, which scores between
    forward passes, keeps the caller's thread count."""

    def __init__(self, depth: int, name: str = "worker", single_threaded: bool = True) -> None:
        self.depth = depth
        # torch's thread count is per thread (a new thread takes a process-wide default at its first operation,
        # which any torch.set_num_threads changes): the worker sets its own, one core or the caller's count
        threads = 1 if single_threaded else torch.get_num_threads()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hazardseg-{name}",
                                       initializer=torch.set_num_threads, initargs=(threads,)) if depth > 0 else None
        self.pending: deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(_run_in_mode, torch.is_inference_mode_enabled(), fn, args))

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self, cancel: bool = False) -> None:
        try:
            if not cancel:
                self.drain()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pending.clear()


def _run_in_mode(inference: bool, fn: Callable, args: tuple) -> Any:
    with torch.inference_mode(inference):
        return fn(*args)
