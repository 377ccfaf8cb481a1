"""The forward contract of every hazardseg network: what losses, scorers and callbacks may read.

``net(image)`` with ``image`` (N, 3, H, W) returns a :class:`SegmentationOutput` dict:

========================  =================  =====================================================
key                       shape              meaning
========================  =================  =====================================================
``logits``                (N, K, H, W)       scores of the K known classes at input size (never softmaxed)
``features``              (N, D, h, w)       the decoder output the classifier reads, at stride
                                             ``feature_stride`` of the input padded to the encoder's
                                             stride (h = ceil(H / s) for most architectures)
``feature_stride``        int                s: :func:`features_to_input` maps an (N, h, w) map
                                             computed from ``features`` back to (N, H, W)
``<head name>``           (N, C, H, W)       one entry per configured head (``model.heads.<name>``),
                                             at input size; heads marked ``training_only`` (deep
                                             supervision, e.g. ``aux``) are absent in eval mode
``class_logits``          (N, Q, K+1)        query-based (mask-classification) networks only: per
                                             query, K known classes + "no object" (last)
``mask_logits``           (N, Q, h, w)       query-based networks only: per-query mask logits at
                                             their own resolution (h, w <= H, W)
========================  =================  =====================================================

A query-based network (Mask2Former) also fills ``logits`` (N, K, H, W): its semantic scores
``s = einsum("nqc,nqhw->nchw", softmax(class_logits)[..., :K], sigmoid(resize(mask_logits)))``, so
mIoU and every per-pixel scorer work on it unchanged (they then read ``s``, not a linear classifier).

Scorers receive this dict (post-hoc scorers read ``logits``/``features``, trained anomaly heads'
scorers read their head's entry, query scorers ``class_logits``/``mask_logits``); loss terms receive
it together with the batch. Which of them a network produces it says in ``output_names``
(:class:`hazardseg.models.base.SegmentationNetwork`), so a component that needs an output it lacks is
refused at start with one line instead of failing mid-run.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

from hazardseg.maps import resize

RESERVED_KEYS = ("logits", "features", "feature_stride")
QUERY_KEYS = ("class_logits", "mask_logits")


class SegmentationOutput(TypedDict, total=False):
    logits: Tensor
    features: Tensor
    feature_stride: int
    class_logits: Tensor
    mask_logits: Tensor
    # ... plus one Tensor per configured head, under the head's name.


def features_to_input(values: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """An (N, h, w) or (N, C, h, w) map computed from ``features`` (at ``feature_stride``) -> input size."""
    return resize(values, size, stride=stride)
