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
                                             stride s of the input padded to a multiple of s, cropped
                                             to (ceil(H / s), ceil(W / s)); s = ceil(H / h), so the
                                             resolution follows from the shapes (:func:`masks_to_input`)
``negative_class``        int                query networks with a trained negative class (UNO) only:
                                             its index in ``class_logits`` (K; no object is K + 1)
``query_aux``             list of dicts      training only: ``class_logits`` / ``mask_logits`` of
                                             every earlier decoder layer (deep supervision)
========================  =================  =====================================================

A query-based network (Mask2Former) also fills ``logits`` (N, K, H, W) with its semantic scores
(Mask2Former's semantic inference, :func:`semantic_scores`)::

    s = einsum("nqc,nqhw->nchw", softmax(class_logits)[..., :K], sigmoid(upsample(mask_logits)))

with the mask *logits* upsampled bilinearly (``align_corners=False``) to the input size before the
sigmoid. mIoU and every per-pixel scorer work on it unchanged; on a mask model they read ``s`` (a sum
of query probabilities in [0, ~1] per class), not a linear classifier's logits: MSP / entropy / energy
take a softmax of ``s``, MaxLogit reads ``-max s`` (= Mask2Anomaly's score up to a constant),
Mahalanobis reads ``features`` (the pixel decoder's mask features, stride 4).

Scorers receive this dict (post-hoc scorers read ``logits``/``features``, trained anomaly heads'
scorers read their head's entry, query scorers ``class_logits``/``mask_logits``); loss terms receive
it together with the batch. Which of them a network produces it says in ``output_names``
(:class:`hazardseg.models.base.SegmentationNetwork`), so a component that needs an output it lacks is
refused at start with one line instead of failing mid-run.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import Tensor

from hazardseg.maps import resize

RESERVED_KEYS = ("logits", "features", "feature_stride")
QUERY_KEYS = ("class_logits", "mask_logits")
# Largest (queries x pixels) float32 block the query helpers hold at once (64 MB): 100 queries at 1024x2048
# (~800 MB as one tensor) are processed 8 queries at a time.
QUERY_CHUNK_ELEMENTS = 1 << 24


class SegmentationOutput(TypedDict, total=False):
    logits: Tensor
    features: Tensor
    feature_stride: int
    class_logits: Tensor
    mask_logits: Tensor
    negative_class: int
    query_aux: list
    # ... plus one Tensor per configured head, under the head's name.


def features_to_input(values: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """An (N, h, w) or (N, C, h, w) map computed from ``features`` (at ``feature_stride``) -> input size."""
    return resize(values, size, stride=stride)


def masks_to_input(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, Q, h, w) mask logits -> (N, Q, H, W) at input size; unchanged when they already match.

    The stride is read from the shapes: s = ceil(H / h). The masks are upsampled by s (bilinear,
    ``align_corners=False``) and cropped to ``size``, which is a plain resize when h * s == H."""
    h, w = mask_logits.shape[-2:]
    if (h, w) == tuple(size):
        return mask_logits
    stride = -(-int(size[0]) // h)
    if h * stride == size[0] and w * stride == size[1]:
        return resize(mask_logits, size)
    return resize(mask_logits, size, stride=stride)


def query_chunks(mask_logits: Tensor, size: tuple[int, int]):
    """Yield ``(query slice, sigmoid of those queries' masks at input size)``, a few queries at a time, so
    that no (N, Q, H, W) float32 tensor is ever held (see :data:`QUERY_CHUNK_ELEMENTS`)."""
    n, q = mask_logits.shape[:2]
    per_query = n * int(size[0]) * int(size[1])
    step = max(1, min(q, QUERY_CHUNK_ELEMENTS // max(per_query, 1)))
    for start in range(0, q, step):
        part = slice(start, min(q, start + step))
        yield part, masks_to_input(mask_logits[:, part].float(), size).sigmoid()


def semantic_scores(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int], num_classes: int) -> Tensor:
    """Mask2Former's semantic inference: (N, K, H, W) ``s = sum_q softmax(c_q)[:K] * sigmoid(m_q)``.

    The softmax runs over every class output (known, negative if any, no object); ``s`` keeps the first
    ``num_classes`` (the known classes). Computed in query chunks (:func:`query_chunks`)."""
    probs = class_logits.float().softmax(-1)[..., :num_classes]
    out = None
    with torch.autocast(mask_logits.device.type, enabled=False):  # float32 under AMP too: anomaly scores read s
        for part, masks in query_chunks(mask_logits, size):
            term = torch.einsum("nqc,nqhw->nchw", probs[:, part], masks)
            out = term if out is None else out + term
    return out


def query_weighted_sum(weights: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) ``sum_q weights[n, q] * sigmoid(m_q)`` at input size, in query chunks (EAM, UNO)."""
    out = None
    with torch.autocast(mask_logits.device.type, enabled=False):
        for part, masks in query_chunks(mask_logits, size):
            term = torch.einsum("nq,nqhw->nhw", weights[:, part].float(), masks)
            out = term if out is None else out + term
    return out
