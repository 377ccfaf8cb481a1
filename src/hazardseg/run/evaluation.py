"""Test stage: ``Trainer.test`` on the test split; the evaluation callbacks fit scorer statistics, compute the
anomaly and benchmark metrics and save panels, and hand back what they produced through the results
channel (:mod:`hazardseg.callbacks.base`)."""

from __future__ import annotations

from typing import Any

from hazardseg.callbacks import scorer_rows
from hazardseg.callbacks.base import collect_results
from hazardseg.run.build import Run


def test(run: Run) -> dict[str, Any]:
    """The run's test results: logged metrics, one row per scorer, and every evaluation callback's results
    under its own key (``panels``, ``curves``, ``benchmark``)."""
    trainer, module = run.trainer, run.module
    (metrics,) = trainer.test(module, datamodule=run.datamodule, verbose=False) or [{}]
    metrics = {k: float(v) for k, v in metrics.items()}
    return {"metrics": metrics, "scorers": scorer_rows(metrics, list(module.scorers)), "panels": [], "curves": {},
            **collect_results(trainer.callbacks)}
