"""The set loss of mask-classification networks (Mask2Former), from transformers: ``loss=mask2former``.

transformers' ``Mask2FormerLoss`` does the work (Hungarian matching, point-sampled mask BCE + dice with
importance sampling, class cross-entropy with the "no object" weight); this term only turns our semantic
targets into what it takes, as Mask2Former's semantic dataset mapper does: per image, one binary mask
and class id per class present. Ignored pixels (255) belong to no mask (negatives of every mask, as in
the official mapper). Pasted outliers (254) likewise with ``outliers: ignore``; with ``outliers:
negative`` they form one more segment of the negative class (index K, UNO's negative class,
``model.negative_class=true``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hazardseg.data.labels import IGNORE_LABEL, OUTLIER_LABEL
from hazardseg.errors import ConfigError
from hazardseg.losses.base import LossTerm, inliers, outliers

OUTLIER_MODES = ("ignore", "negative")


class MaskClassificationLoss(LossTerm):
    """``sum over decoder layers of class_weight * CE + mask_weight * BCE + dice_weight * dice`` (transformers).

    Args:
        class_weight / mask_weight / dice_weight / no_object_weight: Mask2Former's (2, 5, 5, 0.1).
        num_points / oversample_ratio / importance_sample_ratio: point sampling of the mask losses
            (12544, 3, 0.75 in the paper).
        deep_supervision: also the loss of every earlier decoder layer (``query_aux``), as the paper.
        outliers: ``ignore`` (pasted outliers belong to no mask) or ``negative`` (their own segment of
            the negative class; the network needs ``negative_class: true``).
    """

    reads_queries = True

    def __init__(self, weight: float = 1.0, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 no_object_weight: float = 0.1, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, deep_supervision: bool = True, outliers: str = "ignore"):
        super().__init__(weight, output="class_logits")
        if outliers not in OUTLIER_MODES:
            raise ConfigError(f"outliers={outliers!r}: expected one of {list(OUTLIER_MODES)}")
        if not 0.0 <= importance_sample_ratio <= 1.0 or oversample_ratio < 1.0 or int(num_points) < 1:
            raise ConfigError(f"num_points={num_points}, oversample_ratio={oversample_ratio}, importance_sample_ratio="
                              f"{importance_sample_ratio}: expected >= 1, >= 1 and in [0, 1]")
        self.settings = {"class_weight": float(class_weight), "mask_weight": float(mask_weight), "dice_weight": float(dice_weight),
                         "no_object_weight": float(no_object_weight), "train_num_points": int(num_points),
                         "oversample_ratio": float(oversample_ratio), "importance_sample_ratio": float(importance_sample_ratio)}
        self.deep_supervision = bool(deep_supervision)
        self.outliers = outliers
        # transformers' loss module, built for the class count it first sees. A plain dict, not a submodule: its
        # buffer (the class weights) must stay out of the LightningModule's state_dict, which resumes strictly.
        self._criteria: dict[tuple[int, str], Any] = {}

    @property
    def uses_outliers(self) -> bool:
        return self.outliers == "negative"

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        class_logits, mask_logits = outputs["class_logits"], outputs["mask_logits"]
        num_labels = class_logits.shape[-1] - 1
        if self.outliers == "negative" and outputs.get("negative_class") is None:
            raise ConfigError("loss.terms.mask2former.outliers=negative: the network has no negative class. "
                              "Fix: model.negative_class=true (loss=uno sets it)")
        mask_labels, class_labels = self.targets(batch["mask"], outputs.get("negative_class"))
        if sum(len(c) for c in class_labels) == 0:  # nothing labelled in the whole batch: no gradient, still a graph
            return class_logits.sum() * 0.0
        criterion = self._criterion(num_labels, class_logits.device)
        aux = outputs.get("query_aux") if self.deep_supervision else None
        aux = None if not aux else [{"masks_queries_logits": a["mask_logits"], "class_queries_logits": a["class_logits"]} for a in aux]
        terms = criterion(masks_queries_logits=mask_logits, class_queries_logits=class_logits, mask_labels=mask_labels,
                          class_labels=class_labels, auxiliary_predictions=aux)
        weights = criterion.weight_dict  # transformers' model weights its loss terms itself; so does this term
        return sum(weights[next(k for k in weights if name.startswith(k))] * value for name, value in terms.items())

    def targets(self, target: Tensor, negative_class: int | None) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: (C_i, H, W) float binary masks and (C_i,) class ids of the classes present."""
        masks, classes = [], []
        for t in target:
            if self.outliers == "negative":
                t = t.masked_fill(t == OUTLIER_LABEL, int(negative_class))
            present = torch.unique(t)
            present = present[(present != IGNORE_LABEL) & (present != OUTLIER_LABEL)]
            masks.append((t[None] == present[:, None, None]).float())
            classes.append(present.long())
        return masks, classes

    def _criterion(self, num_labels: int, device: torch.device):
        key = (num_labels, str(device))
        if key not in self._criteria:
            self._criteria[key] = _set_criterion(num_labels, self.settings).to(device)
        return self._criteria[key]

    def extra_repr(self) -> str:
        return f"weight={self.weight}, outliers={self.outliers!r}, deep_supervision={self.deep_supervision}, {self.settings}"


def _set_criterion(num_labels: int, settings: Mapping[str, Any]):
    from transformers import Mask2FormerConfig
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    class DistributedMask2FormerLoss(Mask2FormerLoss):
        """transformers averages the target-mask count over processes only under accelerate; under Lightning's
        DDP the official recipe's all-reduce (detectron2's SetCriterion) is done here."""

        def get_num_masks(self, class_labels, device):
            num_masks = torch.as_tensor(float(sum(len(c) for c in class_labels)), device=device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(num_masks)
                num_masks = num_masks / torch.distributed.get_world_size()
            return torch.clamp(num_masks, min=1)

    config = Mask2FormerConfig(num_labels=num_labels, **settings)  # the default backbone: it logs nothing
    weight_dict = {"loss_cross_entropy": settings["class_weight"], "loss_mask": settings["mask_weight"],
                   "loss_dice": settings["dice_weight"]}
    return DistributedMask2FormerLoss(config, weight_dict)


class QueryOutlierLoss(LossTerm):
    """A loss on an anomaly score of ``s`` for inlier and pasted-outlier pixels, summed over decoder layers: the
    form of RbA's and Mask2Anomaly's official criteria. ``s`` is computed at the masks' resolution and the score
    upsampled to the label size (:func:`to_label_size`); subclasses give :meth:`score` and :meth:`layer_loss`."""

    reads_queries = True

    def __init__(self, weight: float = 1.0, deep_supervision: bool = True):
        super().__init__(weight, output="class_logits")
        self.deep_supervision = bool(deep_supervision)

    @property
    def uses_outliers(self) -> bool:
        return True

    def score(self, s: Tensor) -> Tensor:
        """(N, K, h, w) semantic scores -> (N, h, w) anomaly score."""
        raise NotImplementedError

    def layer_loss(self, score: Tensor, is_in: Tensor, is_out: Tensor) -> Tensor:
        """One decoder layer's loss from its score at label size and the inlier / outlier pixel masks."""
        raise NotImplementedError

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        target = batch["mask"]
        is_in, is_out = inliers(target), outliers(target)
        k = known_classes(outputs)
        total = 0.0
        for class_logits, mask_logits in query_layers(outputs, self.deep_supervision):
            score = to_label_size(self.score(semantic_at_mask_resolution(class_logits, mask_logits, k)), target.shape[-2:])
            total = total + self.layer_loss(score, is_in, is_out)
        return total


def query_layers(outputs: Mapping[str, Any], deep_supervision: bool) -> list[tuple[Tensor, Tensor]]:
    """(class_logits, mask_logits) of the last decoder layer, then of every earlier one (with deep supervision)."""
    layers = [(outputs["class_logits"], outputs["mask_logits"])]
    if deep_supervision:
        layers += [(aux["class_logits"], aux["mask_logits"]) for aux in outputs.get("query_aux") or []]
    return layers


def semantic_at_mask_resolution(class_logits: Tensor, mask_logits: Tensor, num_classes: int) -> Tensor:
    """``s`` (N, K, h, w) of the known classes at the masks' own resolution: the form the official outlier losses
    of RbA and Mask2Anomaly score (they upsample the *score*, not the masks)."""
    probs = class_logits.float().softmax(-1)[..., :num_classes]
    return torch.einsum("nqc,nqhw->nchw", probs, mask_logits.float().sigmoid())


def known_classes(outputs: Mapping[str, Any]) -> int:
    """K: class outputs minus "no object" and, if the network has one, the negative class."""
    return outputs["class_logits"].shape[-1] - 1 - int(outputs.get("negative_class") is not None)


def to_label_size(score: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) score -> label size, bilinear with ``align_corners=True`` as in RbA's / Mask2Anomaly's criterion."""
    return torch.nn.functional.interpolate(score[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
