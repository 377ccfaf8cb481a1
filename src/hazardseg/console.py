"""Messages to the user: through :mod:`logging` when Hydra's job logging is set up (so they reach the
terminal *and* ``<run dir>/<task>.log``), plain ``print`` otherwise (library use, tests)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("hazardseg")


def say(message: str, level: int = logging.INFO) -> None:
    if _job_logging_active():
        log.log(level, message)
    else:
        print(message, flush=True)


def render_table(table) -> str:
    """A ``rich.table.Table`` as plain text (box drawing, no colour codes), for logs and terminals alike."""
    from rich.console import Console

    console = Console(width=max(100, min(200, _width(table))), record=True, file=_Null(), color_system=None)
    console.print(table)
    return console.export_text().rstrip()


def _job_logging_active() -> bool:
    # Hydra's default job logging gives the root logger a FileHandler (<run dir>/<task>.log) and a console
    # handler. Only that one counts: pytest, for one, installs a FileHandler of its own.
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    run_dir = os.path.realpath(HydraConfig.get().runtime.output_dir)
    return any(isinstance(h, logging.FileHandler) and os.path.dirname(h.baseFilename) == run_dir
               for h in logging.getLogger().handlers)


def _width(table) -> int:
    return 4 + sum(max([len(str(c.header))] + [len(str(x)) for x in c._cells]) + 3 for c in table.columns)


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
