"""Auxiliary *segmentation* head on an intermediate encoder stage (training-time deep supervision).

SMP's ``aux_params`` is an image-level classification head, so it cannot provide this; the design
follows torchvision's DeepLabV3 ``aux_classifier`` (FCNHead on ResNet layer3).
"""

from __future__ import annotations

from torch import Tensor, nn

from hazardseg.models.head import Head


class AuxSegmentationHead(Head):
    """conv3x3 -> BN -> ReLU -> dropout -> conv1x1 to ``num_classes`` (torchvision's FCNHead)."""

    def __init__(self, in_stage: int | None = -2, training_only: bool = True, hidden: int | None = None,
                 dropout: float = 0.1):
        super().__init__(in_stage, training_only)
        self.hidden, self.dropout = hidden, dropout

    def build(self, in_channels: int, num_classes: int) -> None:
        hidden = self.hidden or max(in_channels // 4, 32)
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(self.dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, features: Tensor) -> Tensor:  # (N, C_in, h, w) -> (N, K, h, w)
        return self.layers(features)
