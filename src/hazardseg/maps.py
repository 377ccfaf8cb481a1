"""Per-pixel maps: the one resize that score maps, feature maps and semantic maps go through, and the
pad-to-a-multiple / crop-back that lets every network family take inputs of any size.

It stands below every other module (torch only), so metrics, scorers, models and callbacks share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def resize(values: Tensor, size: tuple[int, int], stride: int | None = None) -> Tensor:
    """Bilinear (half-pixel centres, ``align_corners=False``) resize of an (H, W), (N, H, W) or (N, C, H, W)
    map to ``size``; the one resize of hazardseg (score maps to label size, feature maps to input size).

    With ``stride`` the map is at that stride of an input *padded* to a multiple of it: it is upsampled to
    ``(h * stride, w * stride)``, then cropped to ``size``, so pixels stay aligned with ``logits`` whatever
    padding the network added. Without it, a map already at ``size`` is returned as it is.
    """
    size = (int(size[0]), int(size[1]))
    if stride is None and tuple(values.shape[-2:]) == size:
        return values
    lead, (h, w) = values.shape[:-2], values.shape[-2:]
    x = values.reshape(-1, 1, h, w)  # bilinear resizing is per plane: one plane per (image, channel)
    if stride is None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    else:
        if stride != 1:
            x = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)
        x = x[..., : size[0], : size[1]]
    return x.reshape(*lead, *x.shape[-2:])


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad an (..., H, W) input at the bottom and right (replicate) to multiples of ``multiple``: networks take
    inputs of any size this way and crop their outputs back (:func:`crop`)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x


def crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """The top-left ``size`` of an (..., H, W) map: what of a padded input's output covers the input."""
    return x[..., : size[0], : size[1]]
