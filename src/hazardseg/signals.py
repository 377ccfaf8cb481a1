"""SIGTERM (what SLURM sends before it kills a job) honoured wherever a run spends its time.

Inside Lightning's training and evaluation loops Lightning's own handler decides: it notes the signal and raises
``SIGTERMException`` at the next batch boundary, after which :class:`~hazardseg.callbacks.checkpointing.PreemptionCheckpoint`
writes ``last.ckpt``. The rest of a run's time is outside those loops, even when it is inside a Trainer hook:
scorer fitting, benchmark metrics, submission export, reports. There:

* in a Trainer hook (Lightning's handler is installed and calls ours), the signal is noted and
  :func:`stop_point` raises at the next unit of work (a batch of scorer fitting, a frame of benchmark metrics
  or export, a figure of a report), never in the middle of a write;
* anywhere else (building, recording, the report after a run) our handler raises at once, as Ctrl-C does;
  every writer is atomic (:mod:`hazardseg.io`), so nothing is left half-written.

The entry point (:func:`hazardseg.cli.run_task`) turns the exception into exit status 143 and results.json
status ``interrupted``. ``stop_point`` takes the name of its stage; callers reach it as ``signals.stop_point``, so
tests can send signals at named stages by replacing it in this one module (``tests/faults.py``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from lightning.pytorch.utilities.exceptions import SIGTERMException

STAGES = ("scorer-fitting", "benchmark-metrics", "submission-export", "report", "prediction-writing")
_state = {"received": False}


def install() -> None:
    """Handle SIGTERM from now on (main thread only; entry points call it before the run starts)."""
    if threading.current_thread() is threading.main_thread():
        _state["received"] = False
        signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """SIGTERM ignored inside the block (the last writes of an interrupted run), then handled as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def received() -> bool:
    return _state["received"]


def stop_point(stage: str) -> None:
    """A place where stopping is safe (between two units of ``stage``'s work): raise ``SIGTERMException`` when
    SIGTERM has arrived. Called often; costs one dict lookup."""
    if _state["received"]:
        raise SIGTERMException


def _handler(signum, frame) -> None:
    _state["received"] = True
    if signal.getsignal(signal.SIGTERM) is _handler:  # not wrapped by a running Trainer: stop now, like Ctrl-C
        raise SIGTERMException
    # else Lightning's handler called us: its loop raises at the next batch boundary, stop_point between units
