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
``set_trainable(patterns)``
    train only the matching parameters (the run's ``trainable``): the rest is frozen, and frozen BatchNorm
    layers stay in eval mode, so a fine-tune leaves frozen parts bit-identical, running statistics included.
``adapt_init_state(state)``
    a trained network's state_dict -> one this network can start from (``init_from``); the default keeps it.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from hazardseg.errors import ConfigError
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

    # ------------------------------------------------------------------ fine-tuning
    _frozen_norms: tuple[str, ...] = ()

    def set_trainable(self, patterns: Sequence[str]) -> None:
        """Train only the parameters that match one of ``patterns``: a parameter group name (``encoder``,
        ``decoder``, ``heads``, see :meth:`param_groups`) or a glob on parameter names (``hf.class_predictor.*``).
        A pattern that matches nothing is a one-line error (a typo would silently train nothing)."""
        patterns = [str(p) for p in patterns]
        groups = self.param_groups()
        chosen: set[int] = set()
        for pattern in patterns:
            if pattern in groups:
                found = {id(p) for p in groups[pattern]}
            else:
                found = {id(p) for name, p in self.named_parameters() if fnmatch.fnmatchcase(name, pattern)}
            if not found and pattern not in groups:  # a group may be empty (no heads); a glob that finds nothing is a typo
                example = next(iter(name for name, _ in self.named_parameters()), "")
                raise ConfigError(f"trainable: '{pattern}' matches no parameter. Fix: a group ({', '.join(groups)}) or a glob "
                                  f"on parameter names (e.g. '{example.rsplit('.', 1)[0]}.*')")
            chosen |= found
        if not chosen:
            raise ConfigError(f"trainable={patterns}: selects no parameter of this network (its {', '.join(patterns)} "
                              f"group(s) are empty). Fix: name a group with parameters, e.g. decoder")
        for p in self.parameters():
            p.requires_grad_(id(p) in chosen)
        # BatchNorm layers whose parameters are all frozen keep their running statistics (see train()).
        self._frozen_norms = tuple(name for name, m in self.named_modules()
                                   if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
                                   and not any(p.requires_grad for p in m.parameters()))
        # Now, too: Lightning never calls train() at the start of fit (it keeps and restores each module's mode).
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._frozen_norms:  # frozen parts keep their statistics bit-identical
            self.get_submodule(name).eval()
        return self

    def adapt_init_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state
