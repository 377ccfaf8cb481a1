"""Spatial post-processing of per-pixel anomaly maps (Jung et al., "Standardized Max Logits", ICCV 2021).

Pure-torch ports of the reference implementation (github.com/shjung13/Standardized-max-logits,
``network/deepv3.py::BoundarySuppressionWithSmoothing``). The reference uses
``kornia.morphology`` with its default *geodesic* border: pixels outside the image never take part
in a dilation/erosion; we pad with -inf/+inf for the same effect.

Both modules take a value map ``(N, H, W)`` or ``(N, 1, H, W)`` and return the same shape; they are
linear in the values, so they can be applied to any score regardless of its sign convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hazardseg.errors import ConfigError
from hazardseg.maps import in_row_bands


def _as_4d(x: Tensor) -> tuple[Tensor, bool]:
    if x.ndim == 3:
        return x.unsqueeze(1), True
    if x.ndim == 4 and x.shape[1] == 1:
        return x, False
    raise ValueError(f"expected a (N,H,W) or (N,1,H,W) map, got {tuple(x.shape)}")


def dilate_cross(x: Tensor) -> Tensor:
    """Grey dilation of (N,1,H,W) with the 3x3 cross (4-neighbourhood); outside pixels ignored."""
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    h, w = x.shape[-2:]
    # pairwise maxima of the shifted views: no (5, N, 1, H, W) stack (5 full copies at 2048x1024); no `out=`, which
    # the ONNX exporter cannot translate (export.py)
    out = torch.maximum(p[..., :h, 1:w + 1], p[..., 2:, 1:w + 1])
    out = torch.maximum(out, p[..., 1:h + 1, :w])
    out = torch.maximum(out, p[..., 1:h + 1, 2:])
    return torch.maximum(out, x)


def erode_square(x: Tensor) -> Tensor:
    """Grey erosion of (N,1,H,W) with the 3x3 square; outside pixels ignored (+inf padding, i.e. geodesic).
    Separable minima of shifted views: CPU ``max_pool2d`` takes 25x as long at 2048x1024."""
    p = F.pad(x, (1, 1, 1, 1), value=float("inf"))
    h, w = x.shape[-2:]
    rows = torch.minimum(torch.minimum(p[..., :, :w], p[..., :, 1:w + 1]), p[..., :, 2:])
    return torch.minimum(torch.minimum(rows[..., :h, :], rows[..., 1:h + 1, :]), rows[..., 2:, :])


def box_sum(padded: Tensor) -> Tensor:
    """3x3 window sums of a (N,1,H+2,W+2) map padded by one pixel: (N,1,H,W). Separable sums of shifted views
    (CPU ``conv2d`` with a one-channel 3x3 kernel takes 20x as long at 2048x1024)."""
    h, w = padded.shape[-2] - 2, padded.shape[-1] - 2
    rows = padded[..., :, :w] + padded[..., :, 1:w + 1] + padded[..., :, 2:]
    return rows[..., :h, :] + rows[..., 1:h + 1, :] + rows[..., 2:, :]


def find_boundaries(pred: Tensor) -> Tensor:
    """Float 0/1 map of class boundaries: ``dilation(pred, cross) != erosion(pred, square)``."""
    pred = pred.float()
    return (dilate_cross(pred) != erode_square(pred)).float()


def expand_boundaries(boundaries: Tensor, radius: int) -> Tensor:
    """Dilate a 0/1 map ``radius`` times with the cross (= L1 ball of that radius, as the reference)."""
    for _ in range(radius):
        boundaries = dilate_cross(boundaries)
    return boundaries


class BoundarySuppression(nn.Module):
    """Iteratively replace values on predicted-class boundaries by their non-boundary 3x3 mean.

    Iteration ``i`` treats as boundary the boundary map dilated ``width - (width//iterations)*i - 1``
    times (0 on the last iteration), so values propagate inward from the region interiors.
    """

    def __init__(self, boundary_width: int = 4, boundary_iteration: int = 4) -> None:
        super().__init__()
        if boundary_width < 0 or boundary_iteration < 0:
            raise ConfigError(
                f"boundary_width and boundary_iteration must be >= 0, got {boundary_width}, {boundary_iteration}"
            )
        if boundary_iteration and boundary_width % boundary_iteration:
            raise ConfigError(
                f"boundary_width ({boundary_width}) must be a multiple of boundary_iteration ({boundary_iteration})"
            )
        self.boundary_width = boundary_width
        self.boundary_iteration = boundary_iteration

    def expansion_widths(self) -> list[int]:
        """Per-iteration expansion radii, e.g. [3, 2, 1, 0] for width=iterations=4."""
        it, w = self.boundary_iteration, self.boundary_width
        diff = w // it if it else 0
        return [0 if (w == 0 or i == it - 1) else w - diff * i - 1 for i in range(it)]

    def reach(self) -> int:
        """How far (in rows or columns) a suppressed value reads its inputs: the boundary test's 1 pixel, the widest
        expansion, and one 3x3 mean per iteration."""
        radii = self.expansion_widths()
        return 1 + max(radii, default=0) + len(radii) if radii else 0

    def forward(self, x: Tensor, pred: Tensor) -> Tensor:
        out, squeeze = _as_4d(x)
        # shifted views only, so it runs on bands of rows with their receptive field around them: the same bits
        # (tested), a third less time on the CPU at 2048x1024
        out = in_row_bands(self._suppress, out, pred.reshape(out.shape), halo=self.reach())
        return out.squeeze(1) if squeeze else out

    def _suppress(self, out: Tensor, pred: Tensor) -> Tensor:
        boundaries = find_boundaries(pred)
        radii = self.expansion_widths()
        # the boundary dilated 0..max(radii) times, each from the previous one (radii shrink: 3, 2, 1, 0)
        expanded = [boundaries]
        for _ in range(max(radii, default=0)):
            expanded.append(dilate_cross(expanded[-1]))
        for radius in radii:
            keep = (expanded[radius] == 0).to(out.dtype)  # 1 = non-boundary
            # ReplicationPad2d(1) as in the reference (border pixels see replicated neighbours).
            total = box_sum(F.pad(out * keep, (1, 1, 1, 1), mode="replicate"))
            count = box_sum(F.pad(keep, (1, 1, 1, 1), mode="replicate"))  # exact: sums of 0/1
            avg = torch.where(count == 0, out, total / count.clamp_min(1))
            out = torch.where(keep == 0, avg, out)
        return out

    def extra_repr(self) -> str:
        return f"boundary_width={self.boundary_width}, boundary_iteration={self.boundary_iteration}"


def gaussian_kernel(kernel_size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian ``exp(-((x-c)^2 + (y-c)^2) / (2 sigma^2))``, c = (k-1)/2, sum = 1."""
    r = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return (k / k.sum()).float()


class DilatedSmoothing(nn.Module):
    """Dilated Gaussian smoothing: replicate-pad, then a ``kernel_size`` Gaussian conv with ``dilation``.

    Output has the input's size (pad = dilation * (kernel_size - 1) / 2, i.e. ``dilation * 3`` for 7).
    """

    def __init__(self, kernel_size: int = 7, sigma: float = 1.0, dilation: int = 6) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if not sigma > 0 or dilation < 1:
            raise ConfigError(f"sigma must be > 0 and dilation >= 1, got sigma={sigma}, dilation={dilation}")
        self.kernel_size, self.sigma, self.dilation = kernel_size, float(sigma), dilation
        self.register_buffer("kernel", gaussian_kernel(kernel_size, sigma)[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out, squeeze = _as_4d(x)
        # on bands of rows with the kernel's reach as their halo: the same bits (tested), and on the CPU at 2048x1024
        # 57 -> 17 ms, since one call's convolution workspace is large enough to be mapped and faulted in afresh
        # every time
        out = in_row_bands(self._smooth, out, halo=self.reach())
        return out.squeeze(1) if squeeze else out

    def reach(self) -> int:
        """How far (in rows or columns) a smoothed value reads its inputs."""
        return self.dilation * (self.kernel_size - 1) // 2

    def _smooth(self, x: Tensor) -> Tensor:
        pad = self.reach()
        out = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(out, self.kernel.to(out.dtype), dilation=self.dilation)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, dilation={self.dilation}"
