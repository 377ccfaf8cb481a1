"""Per-pixel maps: the one resize that score maps, feature maps and semantic maps go through, the
pad-to-a-multiple / crop-back that lets every network family take inputs of any size, and the banded
evaluation of per-pixel arithmetic (:func:`in_bands`) and of neighbourhood filters (:func:`in_row_bands`) on the CPU.

It stands below every other module (torch only), so metrics, scorers, models and callbacks share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
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


# Elements of one band of an (N, C, H, W) input (8 MiB of float32): a band and its temporaries stay in the CPU
# caches and in the allocator's heap. Measured on a 13-class 2048x1024 frame, 2 cores: bands of 32-128 rows are
# 1.7-3.5x faster than one pass (MSP 170 -> 97 ms, entropy 267 -> 109 ms, energy 89 -> 27 ms); 256 rows lose
# half of that again (``bench/README.md``).
BAND_ELEMENTS = 1 << 21


def in_bands(fn: Callable[..., Tensor | tuple[Tensor, ...]], x: Tensor, *more: Tensor) -> Tensor | tuple[Tensor, ...]:
    """``fn(x, *more)`` for an ``fn`` that maps an (N, C, H, W) tensor (and (N, H, W) maps ``more`` of the same
    pixels) to (N, H, W) maps pixel by pixel, computed on bands of rows of one image at a time on the CPU.

    Why: a whole-frame temporary (13 classes x 2 MP = 108 MB) is returned to the operating system when freed, so
    each elementwise step of a scorer pays page faults and memory traffic again; a band's temporaries are
    reused from the heap while still in cache. On other devices (their allocators cache blocks) ``fn(x)`` runs as is.

    Each pixel goes through the same arithmetic as in one call. A band holds a multiple of 64 pixels, so torch's
    vectorised loops split it where they split the whole frame; values can still differ in the last bit from a
    one-call result where a loop's scalar tail falls elsewhere (a frame whose pixel count per thread is not a
    multiple of 64). At the benchmarks' sizes (2048 x 1024, 1280 x 720) they are identical (tested).
    """
    if x.device.type != "cpu" or torch.jit.is_tracing():  # a traced graph (export.py) must not fix its bands
        return fn(x, *more)
    n, c, h, w = x.shape
    align = 64 // math.gcd(w, 64)  # rows per band: a multiple of this many gives a multiple of 64 pixels
    rows = max(align, BAND_ELEMENTS // max(1, c * w) // align * align)
    if n == 1 and rows >= h:
        return fn(x, *more)
    out: tuple[Tensor, ...] | None = None
    single = False
    for i in range(n):
        for top in range(0, h, rows):
            part = fn(x[i : i + 1, :, top : top + rows], *(m[i : i + 1, top : top + rows] for m in more))
            single = isinstance(part, Tensor)
            parts = (part,) if single else tuple(part)
            if out is None:
                out = tuple(torch.empty((n, h, w), dtype=p.dtype, device=p.device) for p in parts)
            for o, p in zip(out, parts):
                o[i : i + 1, top : top + rows] = p
    assert out is not None
    return out[0] if single else out


# Elements of one band of :func:`in_row_bands` (1 MiB of float32): suppression's dozens of full-map temporaries per
# iteration stay in the caches. Measured on SML's boundary suppression at 2048x1024, 2 cores: 96 ms in one call,
# 89 / 69 / 65 / 75 ms in bands of 32 / 64 / 128 / 256 rows (plus halos).
HALO_BAND_ELEMENTS = 1 << 18


def in_row_bands(fn: Callable[..., Tensor], x: Tensor, *more: Tensor, halo: int) -> Tensor:
    """``fn(x, *more)`` for an ``fn`` that maps (N, C, H, W) maps to one (N, C', H, W) map in which every pixel
    depends on the inputs within ``halo`` rows of it: computed on the CPU on bands of rows, each with ``halo`` rows
    of its neighbours above and below (whatever ``fn`` does at a band's edges falls in the rows thrown away).

    The same bits as one call when ``fn``'s arithmetic for a pixel does not depend on the map's height (elementwise
    operations and shifted views: :class:`~hazardseg.scorers.postprocess.BoundarySuppression`), the caller's
    ``halo`` being its receptive field. Elsewhere, and while tracing for export, ``fn`` runs once."""
    if x.device.type != "cpu" or torch.jit.is_tracing():
        return fn(x, *more)
    n, c, h, w = x.shape
    rows = max(1, HALO_BAND_ELEMENTS // max(1, n * c * w))
    if rows + 2 * halo >= h:
        return fn(x, *more)
    out: Tensor | None = None
    for top in range(0, h, rows):
        lo, hi = max(0, top - halo), min(h, top + rows + halo)
        part = fn(x[..., lo:hi, :], *(m[..., lo:hi, :] for m in more))
        if out is None:
            out = torch.empty((*part.shape[:-2], h, w), dtype=part.dtype, device=part.device)
        kept = min(rows, h - top)
        out[..., top : top + kept, :] = part[..., top - lo : top - lo + kept, :]
    assert out is not None
    return out
