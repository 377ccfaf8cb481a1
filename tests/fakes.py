"""Test doubles importable by `_target_` (tests put this folder on PYTHONPATH for subprocesses)."""

from __future__ import annotations

import torch
from torchvision import tv_tensors

from hazardseg.data.transforms import OUTLIER_LABEL


class PasteSquare(torch.nn.Module):
    """Minimal paste transform (the interface of the outlier-paste transform): one square of random colour
    at a random place (torch RNG), its mask pixels set to OUTLIER_LABEL."""

    def __init__(self, size: float = 0.25):
        super().__init__()
        self.size = size

    def forward(self, sample: dict) -> dict:
        image, mask = sample["image"].clone(), sample["mask"].clone()
        h, w = mask.shape[-2:]
        side = max(2, int(self.size * min(h, w)))
        top = int(torch.randint(0, h - side + 1, ()).item())
        left = int(torch.randint(0, w - side + 1, ()).item())
        image[:, top:top + side, left:left + side] = torch.randint(0, 256, (3, 1, 1), dtype=image.dtype)
        mask[top:top + side, left:left + side] = OUTLIER_LABEL
        return {**sample, "image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)}


