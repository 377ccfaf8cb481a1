"""The network protocol: what every hazardseg network is, for the module, losses, scorers and callbacks.

A network is an ``nn.Module`` subclass of :class:`SegmentationNetwork` (SMP architectures:
:class:`~hazardseg.models.segmentation_net.SegmentationNet`; a new family is one module like it + one
``conf/model`` YAML). Nothing outside ``models/`` reaches into a network's internals (its encoder, SMP
modules): they read what the protocol below gives.

``forward(image)``
    (N, 3, H, W) normalised image -> :class:`~hazardseg.models.outputs.SegmentationOutput` (the output
    contract: ``logits`` at input size, ``features`` + ``feature_stride``, head entries, optional query
    outputs ``class_logits`` / ``mask_logits``).
``output_names(training)``
    the keys ``forward`` returns in training / eval mode: losses and scorers are checked against it at start.
``param_groups()``
    ``{"encoder": [...], "decoder": [...], "heads": [...]}``: the parameters of each part, for per-part
    learning rates (``optim.encoder_lr_scale``) and freezing.
``criterion()``
    the loss the network brings when it needs more than per-pixel targets (e.g. a Hungarian-matching
    set loss built from per-image instance masks); ``None`` (the default) = the configured ``loss``.
``smallest_train_batch(image_size)``
    the smallest training batch the network can take (2 for BatchNorm after global pooling).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hazardseg.models.outputs import SegmentationOutput

PARAM_GROUPS = ("encoder", "decoder", "heads")


class SegmentationNetwork(nn.Module):
    """Base of every network. Subclasses set ``num_classes`` and implement ``forward``, ``output_names``
    and ``param_groups``; ``criterion`` and ``smallest_train_batch`` have defaults."""

    num_classes: int

    def forward(self, image: torch.Tensor) -> SegmentationOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_names(self, training: bool) -> set[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter in exactly one of ``PARAM_GROUPS``; the default puts all of them in ``decoder``."""
        return {"encoder": [], "decoder": list(self.parameters()), "heads": []}

    def criterion(self) -> nn.Module | None:
        return None

    def smallest_train_batch(self, image_size: tuple[int, int]) -> int:
        """1, or 2 when a training batch of one image fails (BatchNorm after global pooling, e.g. DeepLabV3's
        ASPP image pooling). Probed on a copy: a forward pass in train mode updates BatchNorm statistics."""
        net = copy.deepcopy(self).train()
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, *image_size))
        except ValueError as err:
            if "Expected more than 1 value per channel" not in str(err):
                raise
            return 2
        return 1
