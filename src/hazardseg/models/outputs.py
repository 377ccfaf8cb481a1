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
========================  =================  =====================================================

Scorers receive this dict (post-hoc scorers read ``logits``/``features``, trained anomaly heads'
scorers read their head's entry); loss terms receive it together with the batch.
"""

from __future__ import annotations

from typing import TypedDict

import torch.nn.functional as F
from torch import Tensor

RESERVED_KEYS = ("logits", "features", "feature_stride")


class SegmentationOutput(TypedDict, total=False):
    logits: Tensor
    features: Tensor
    feature_stride: int
    # ... plus one Tensor per configured head, under the head's name.


def features_to_input(values: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample an (N, h, w) or (N, C, h, w) map at feature stride to the input ``size``.

    Upsamples to ``(h * stride, w * stride)`` (the padded input the features were computed on), then
    crops, so pixels stay aligned with ``logits`` whatever padding the network added.
    """
    squeeze = values.ndim == 3
    x = values.unsqueeze(1) if squeeze else values
    if stride != 1:
        x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
    x = x[..., : size[0], : size[1]]
    return x.squeeze(1) if squeeze else x
