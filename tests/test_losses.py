"""Class-balanced cross-entropy: weights from the training split's class distribution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hazardseg.errors import ConfigError
from hazardseg.losses import CompositeLoss, CrossEntropy
from hazardseg.losses.cross_entropy import balanced_class_weights

COUNTS = [600, 300, 100, 0]  # class 3 never occurs in the training split


@pytest.mark.parametrize("scheme", ["inverse_sqrt", "enet"])
def test_balanced_weights_favour_rare_classes_and_keep_the_loss_scale(scheme):
    weights = balanced_class_weights(scheme, COUNTS)
    fractions = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    assert float((fractions * weights).sum()) == pytest.approx(1.0)  # a training pixel weighs 1 on average
    assert weights[0] < weights[1] < weights[2]
    assert weights[3] == weights[:3].max()  # absent class: finite, the largest weight
    if scheme == "inverse_sqrt":
        assert float(weights[2] / weights[0]) == pytest.approx(math.sqrt(6), rel=1e-5)
    else:  # ENet: 1 / ln(1.02 + p)
        assert float(weights[2] / weights[0]) == pytest.approx(math.log(1.02 + 0.6) / math.log(1.02 + 0.1), rel=1e-5)


def test_scheme_weights_are_set_from_counts_and_used():
    term = CrossEntropy(class_weights="inverse_sqrt")
    loss = CompositeLoss({"ce": term})
    assert loss.needs_class_counts
    logits, mask = torch.randn(2, 4, 5, 6), torch.randint(0, 3, (2, 5, 6))
    with pytest.raises(ConfigError, match="set_class_counts"):
        loss({"logits": logits}, {"mask": mask})
    loss.set_class_counts(COUNTS)
    expected = F.cross_entropy(logits, mask, weight=balanced_class_weights("inverse_sqrt", COUNTS))
    assert loss({"logits": logits}, {"mask": mask})["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert not CompositeLoss({"ce": CrossEntropy(class_weights=[1.0, 2.0, 1.0, 1.0])}).needs_class_counts


def test_unknown_weight_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="inverse_sqrt"):
        CrossEntropy(class_weights="median")
