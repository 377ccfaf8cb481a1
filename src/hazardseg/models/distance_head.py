"""Distance-to-prototype classification head: ``logits = -||f - p_c||^2 / (2 * temperature)``.

Used by the "DeepLabV3+ with a distance head" systems: pixels far from every class prototype get
uniformly low logits, which entropy / max-logit scorers then flag as anomalous. Configure it under
the name ``logits`` (``model.heads.logits``) to replace the linear classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hazardseg.models.head import Head


class DistanceHead(Head):
    def __init__(self, embed_dim: int = 64, temperature: float = 1.0, in_stage: int | None = None,
                 training_only: bool = False):
        super().__init__(in_stage, training_only)
        self.embed_dim, self.temperature = embed_dim, temperature

    def build(self, in_channels: int, num_classes: int) -> None:
        self.embed = nn.Conv2d(in_channels, self.embed_dim, 1)
        self.prototypes = nn.Parameter(torch.randn(num_classes, self.embed_dim) * 0.1)

    def forward(self, features: Tensor) -> Tensor:
        emb = self.embed(features)  # (N, D, H, W)
        # ||e - p||^2 = ||e||^2 - 2 e.p + ||p||^2, without materialising (N, K, D, H, W).
        cross = torch.einsum("ndhw,kd->nkhw", emb, self.prototypes)
        sq = emb.pow(2).sum(1, keepdim=True) - 2 * cross + self.prototypes.pow(2).sum(1)[None, :, None, None]
        return -sq / (2 * self.temperature)
