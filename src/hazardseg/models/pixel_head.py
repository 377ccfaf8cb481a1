"""A per-pixel linear head on the decoder features: extra logits next to the classifier's.

It is the classifier's shape (SMP's segmentation head is a 1x1 conv on the decoder output, upsampled
the same way), with ``out_channels`` outputs of its own. Methods that train an anomaly output use it:

- ``void`` (one channel): the (K+1)-th logit of a void / background class (``loss=void``), and PEBAL's
  abstention channel (``loss=pebal``): concatenated to ``logits`` they form a (K+1)-way classifier;
- ``ood`` (one channel): DenseHybrid's dataset-posterior logit ``log p(outlier|x) - log p(inlier|x)``.

Configure it under the output name its loss terms and scorers read::

    model:
      heads:
        void: {_target_: hazardseg.models.pixel_head.PixelHead, out_channels: 1}
"""

from __future__ import annotations

from torch import Tensor, nn

from hazardseg.models.head import Head


class PixelHead(Head):
    """``[BN -> ReLU ->] conv1x1`` from the decoder features to ``out_channels`` maps.

    Args:
        out_channels: number of output maps.
        norm_act: prepend BN + ReLU (DenseHybrid's ``_BNReluConv``); off = exactly the classifier's form.
    """

    def __init__(self, out_channels: int = 1, norm_act: bool = False, in_stage: int | None = None,
                 training_only: bool = False):
        super().__init__(in_stage, training_only)
        self.out_channels, self.norm_act = int(out_channels), bool(norm_act)

    def build(self, in_channels: int, num_classes: int) -> None:
        layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.ReLU()] if self.norm_act else []
        self.layers = nn.Sequential(*layers, nn.Conv2d(in_channels, self.out_channels, 1))

    def forward(self, features: Tensor) -> Tensor:  # (N, C_in, h, w) -> (N, out_channels, h, w)
        return self.layers(features)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, norm_act={self.norm_act}, {super().extra_repr()}"
