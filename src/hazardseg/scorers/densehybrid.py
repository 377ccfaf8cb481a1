"""DenseHybrid score: ``-logsumexp(logits) + log P(outlier | x)`` (Grcić et al., ECCV 2022).

Code: github.com/matejgrcic/DenseHybrid ``evaluations/evaluations.py::THKLOODEvaluation``
(``probs = -logsumexp(logit, 1) + softmax(logit_ood, 1)[:, 1].log()``). The dataset posterior comes from
the one-logit ``ood`` head trained by :mod:`hazardseg.losses.densehybrid`; ``logsigmoid`` gives its log
without the ``log(0) = -inf`` the reference's ``softmax(...).log()`` produces in float32 for confident
inliers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.scorers.base import Scorer


class DenseHybrid(Scorer):
    name = "densehybrid"

    def __init__(self, output: str = "ood") -> None:
        super().__init__()
        self.output = output

    @property
    def required_outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        logits, head = outputs["logits"].float(), outputs[self.output].float()
        return -torch.logsumexp(logits, dim=1) + F.logsigmoid(head[:, 0])

    def extra_repr(self) -> str:
        return f"output={self.output!r}"
