"""The results channel of evaluation callbacks.

An evaluation callback works inside the Trainer's test loop (it reads what ``Segmenter.test_step`` returns)
and hands back what it produced -- beyond the metrics it logs through the module -- under its own key:
``results_key`` and :meth:`EvaluationCallback.results`. The run's test stage
(:func:`hazardseg.run.evaluation.test`) collects them with :func:`collect_results`; the record stage is the
only writer of ``results.json``. Nobody probes a callback's attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import lightning as L


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
