"""Base class of the heads configured in ``model.heads`` (like mmsegmentation's ``auxiliary_head`` list).

A head reads one feature map of the network and writes one output entry under its configured name
(see :mod:`hazardseg.models.outputs`). It is instantiated from config without knowing the network,
then :meth:`Head.build` creates its layers once the network knows the input channels:

    model:
      heads:
        aux:      {_target_: hazardseg.models.AuxSegmentationHead, in_stage: -2, training_only: true}
        void:     {_target_: hazardseg.models.pixel_head.PixelHead, out_channels: 1}   # loss=void
        logits:   {_target_: hazardseg.models.DistanceHead}   # the name ``logits`` replaces the classifier

A new head is one subclass (``build`` + ``forward``) in its own file plus the YAML lines that add it.
"""

from __future__ import annotations

from torch import Tensor, nn


class Head(nn.Module):
    """Args:
        in_stage: which feature map the head reads: ``None`` = the decoder output (what the classifier
            reads, so the head's map is upsampled exactly like the logits), an int = that encoder stage
            (``-2`` = ResNet layer3, as torchvision's DeepLabV3 ``aux_classifier``).
        training_only: run only in training mode (deep supervision); absent from inference outputs.
    """

    def __init__(self, in_stage: int | None = None, training_only: bool = False):
        super().__init__()
        self.in_stage = in_stage
        self.training_only = bool(training_only)

    def build(self, in_channels: int, num_classes: int) -> None:
        """Create the layers; called once by the network before any weights are loaded."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, h, w) feature map -> (N, C_out, h, w); the network resizes it to the input size."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_stage={self.in_stage}, training_only={self.training_only}"
