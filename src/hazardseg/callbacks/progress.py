"""Lightning's Rich progress bar as a configurable callback."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


def rich_progress_bar(enabled: bool = True, leave: bool = True) -> RichProgressBar | None:
    """The bar, or ``None`` (skipped by the instantiator) when ``trainer.enable_progress_bar=false``:
    Lightning refuses a progress-bar callback on a trainer whose bar is disabled."""
    return RichProgressBar(leave=leave) if enabled else None
