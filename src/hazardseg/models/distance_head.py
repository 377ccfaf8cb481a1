"""Distance-to-prototype classification head: ``logits = -||f - p_c||^2 / (2 * temperature)``.

Used by the "DeepLabV3+ with a distance head" systems: pixels far from every class prototype get
uniformly low logits, which entropy / max-logit scorers then flag as anomalous.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DistanceHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 64, temperature: float = 1.0):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, embed_dim, 1)
        self.prototypes = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.1)
        self.temperature = temperature

    def forward(self, features: Tensor) -> Tensor:
        emb = self.embed(features)  # (N, D, H, W)
        # ||e - p||^2 = ||e||^2 - 2 e.p + ||p||^2, without materialising (N, K, D, H, W).
        cross = torch.einsum("ndhw,kd->nkhw", emb, self.prototypes)
        sq = emb.pow(2).sum(1, keepdim=True) - 2 * cross + self.prototypes.pow(2).sum(1)[None, :, None, None]
        return -sq / (2 * self.temperature)
