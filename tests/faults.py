"""Fault injection for tests: run an entry point as a user types it, on a full disk or with a signal at a named stage.

    python tests/faults.py [--file-size-limit BYTES] [--signal-at STAGE] SCRIPT [ARGS...]

* ``--file-size-limit``: no file may grow past BYTES (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored so that the
  write fails with ``EFBIG`` instead of killing the process): what a full disk does to the first large write
  (a checkpoint, a submission file) while small files (configs, logs) still fit.
* ``--signal-at STAGE``: SIGTERM (``--signal INT``: Ctrl-C's SIGINT) sent to the process the first time it reaches
  ``STAGE`` (one of ``hazardseg.signals.STAGES``, through ``hazardseg.signals.stop_point``), as SLURM would send it.

SCRIPT runs as ``__main__`` in this process (``train.py``, ``eval.py``), so the exit status, the terminal output
and the files are the user's. In-process tests use :func:`signal_at` and :func:`file_size_limit` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import runpy
import signal
import sys
from typing import Iterator


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes that would make a file larger than ``limit`` bytes fail with EFBIG (OSError), as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def signal_at(stage: str, signum: int = signal.SIGTERM) -> Iterator[list[str]]:
    """Send ``signum`` to this process the first time ``stage`` is reached; yields the stages seen (in order)."""
    import hazardseg.signals as signals

    if stage not in signals.STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {signals.STAGES}")
    original, seen = signals.stop_point, []

    def reached(name: str) -> None:
        if name == stage and stage not in seen:
            os.kill(os.getpid(), signum)
            signal_pause()
        seen.append(name)
        original(name)

    signals.stop_point = reached  # every caller goes through the module (signals.stop_point), so one place
    try:
        yield seen
    finally:
        signals.stop_point = original


def signal_pause() -> None:
    """Let the interpreter run the signal handler now (it runs between bytecodes of the main thread)."""
    for _ in range(1000):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python tests/faults.py", description=__doc__.splitlines()[0])
    parser.add_argument("--file-size-limit", type=int, default=None)
    parser.add_argument("--signal-at", default=None)
    parser.add_argument("--signal", default="TERM", choices=["TERM", "INT"], help="the signal --signal-at sends")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    sys.argv = [opts.script, *opts.args]
    sys.path[0] = os.path.dirname(os.path.abspath(opts.script))  # as `python SCRIPT` would (not tests/)
    with contextlib.ExitStack() as stack:
        if opts.signal_at:
            stack.enter_context(signal_at(opts.signal_at, getattr(signal, f"SIG{opts.signal}")))
        if opts.file_size_limit is not None:
            stack.enter_context(file_size_limit(opts.file_size_limit))
        runpy.run_path(opts.script, run_name="__main__")


if __name__ == "__main__":
    main()
