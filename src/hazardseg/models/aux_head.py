"""Auxiliary *segmentation* head on an intermediate encoder stage (training-time deep supervision).

SMP's ``aux_params`` is an image-level classification head, so it cannot provide this; the design
follows torchvision's DeepLabV3 ``aux_classifier`` (FCNHead on ResNet layer3).
"""

from __future__ import annotations

from torch import Tensor, nn


class AuxSegmentationHead(nn.Sequential):
    """conv3x3 -> BN -> ReLU -> dropout -> conv1x1 to ``num_classes`` (torchvision's FCNHead)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int | None = None, dropout: float = 0.1):
        hidden = hidden or max(in_channels // 4, 32)
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, features: Tensor) -> Tensor:  # (N, C_in, h, w) -> (N, K, h, w)
        return super().forward(features)
