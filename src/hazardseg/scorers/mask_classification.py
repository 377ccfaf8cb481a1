"""Scorers of mask-classification networks (Mask2Former): RbA, Mask2Anomaly, EAM, UNO. Higher = more anomalous.

They read the query outputs of the output contract (:mod:`hazardseg.models.outputs`): ``class_logits``
(N, Q, K+1) and ``mask_logits`` (N, Q, h, w), and the network's ``logits``, which for a query network are
its semantic scores ``s = sum_q softmax(c_q)[:K] * sigmoid(m_q)`` at input size (mask logits upsampled
bilinearly, ``align_corners=False``, before the sigmoid). A per-pixel network has no query outputs: these
scorers are skipped there with a note (``required_outputs``), so ``scorer=all`` works on both families.
Sums over queries run a few queries at a time (:func:`~hazardseg.models.outputs.query_weighted_sum`), so
100 queries at 1024x2048 never hold a (Q, H, W) float32 tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from hazardseg.models.outputs import query_weighted_sum
from hazardseg.scorers.base import Scorer


class QueryScorer(Scorer):
    """A scorer that needs a mask-classification network's query outputs."""

    @property
    def required_outputs(self) -> tuple[str, ...]:
        return ("class_logits", "mask_logits")


class RbA(QueryScorer):
    """Rejected by All (Nayal et al., ICCV 2023): ``-sum_k tanh(s_k)``.

    A pixel that every known class's masks reject has ``s_k ~ 0`` for all k. Official:
    ``evaluate_ood.py::get_RbA`` in NazirNayal8/RbA (``-logits.tanh().sum(dim=1)`` of the semantic scores).
    """

    name = "rba"

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        return -outputs["logits"].float().tanh().sum(1)


class Mask2Anomaly(QueryScorer):
    """Mask2Anomaly (Rai et al., ICCV 2023): ``1 - max_k s_k``.

    The anomaly inference of shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-Segmentation
    (``anomaly_utils/anomaly_inference.py``: ``1 - torch.max`` over the known classes' semantic scores), without
    its two extras there: the refinement that zeroes pixels covered by a confident extra mask channel, and the
    average with the left-right flipped image.
    """

    name = "mask2anomaly"

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        return 1.0 - outputs["logits"].float().max(1).values


class EAM(QueryScorer):
    """Ensemble over anomaly masks (Grcić, Delić et al.): ``1 - sum_q sigmoid(m_q) * max_{k<K} softmax(c_q)_k``.

    Each query votes for "known" with its most likely known class's probability, spread over its mask.
    Official: ``mask2former/evaluation/ood_detection_evaluation.py`` of matejgrcic/Open-set-M2F
    (``1 - (mask_pred.sigmoid() * mask_cls.softmax(-1)[..., :-1].max(1)).sum(0)``).
    """

    name = "eam"

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        k = outputs["logits"].shape[1]
        probs = outputs["class_logits"].float().softmax(-1)
        vote = probs[..., :k].max(-1).values  # (N, Q)
        return 1.0 - query_weighted_sum(vote, outputs["mask_logits"], tuple(outputs["logits"].shape[-2:]))


class UNO(QueryScorer):
    """Uncertainty and negative objectness (Delić, Grcić, Šegvić, BMVC 2024):
    ``-sum_q sigmoid(m_q) * (max_{k<K} p_q(k) - p_q(negative))``, ``p_q = softmax(c_q)`` over K known classes,
    the negative class and "no object" (K + 2 outputs).

    Needs a network with a trained negative class (``model.negative_class=true``, ``loss=uno``). Official:
    ``mask2former/evaluation/ood_detection_evaluation_UNO.py`` of matejgrcic/Open-set-M2F.
    """

    name = "uno"

    @property
    def required_outputs(self) -> tuple[str, ...]:
        return (*super().required_outputs, "negative_class")

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        k, negative = outputs["logits"].shape[1], int(outputs["negative_class"])
        probs = outputs["class_logits"].float().softmax(-1)
        vote = probs[..., :k].max(-1).values - probs[..., negative]
        return -query_weighted_sum(vote, outputs["mask_logits"], tuple(outputs["logits"].shape[-2:]))
