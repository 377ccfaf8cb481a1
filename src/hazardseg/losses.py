"""Segmentation losses: ``callable(outputs, target) -> {"loss", "main", "aux"?}``.

``ce``: cross-entropy. ``ce+aux``: main + ``aux_weight`` * CE on the auxiliary head (training only).
``fl+h``: focal loss (``focal_gamma``) + ``entropy_weight`` * mean softmax entropy, as in the
distance-head StreetHazards systems.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hazardseg.data.transforms import PAD_LABEL


class SegmentationLoss(nn.Module):
    def __init__(
        self,
        ignore_index: int | None = None,
        aux_weight: float = 0.0,
        focal_gamma: float = 0.0,
        entropy_weight: float = 0.0,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        # With no ignore label configured, only crop padding (PAD_LABEL) is excluded from the loss.
        self.ignore_index = PAD_LABEL if ignore_index is None else int(ignore_index)
        self.aux_weight = float(aux_weight)
        self.focal_gamma = float(focal_gamma)
        self.entropy_weight = float(entropy_weight)
        self.label_smoothing = float(label_smoothing)
        weight = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)

    @property
    def uses_aux(self) -> bool:
        return self.aux_weight > 0

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        main = self.pixel_loss(outputs["logits"], target)
        terms = {"main": main}
        total = main
        if self.entropy_weight:
            terms["entropy"] = self.mean_entropy(outputs["logits"], target)
            total = total + self.entropy_weight * terms["entropy"]
        if self.uses_aux and "aux_logits" in outputs:
            terms["aux"] = self.pixel_loss(outputs["aux_logits"], target)
            total = total + self.aux_weight * terms["aux"]
        terms["loss"] = total
        return terms

    def pixel_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if not self.focal_gamma:
            return F.cross_entropy(
                logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
            )
        ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        pt = torch.exp(-F.cross_entropy(logits, target.clamp(min=0), ignore_index=self.ignore_index, reduction="none"))
        focal = (1 - pt) ** self.focal_gamma * ce
        return focal[valid].mean() if valid.any() else focal.sum() * 0

    def mean_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        entropy = -(logp.exp() * logp).sum(1)
        valid = target != self.ignore_index
        return entropy[valid].mean() if valid.any() else entropy.sum() * 0
