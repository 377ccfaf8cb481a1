"""Any library's per-pixel loss ``fn(logits, target)`` as a loss term, configured in YAML alone.

segmentation-models-pytorch's ``DiceLoss``, ``LovaszLoss``, ``FocalLoss`` (and anything of the same shape:
``(N, K, H, W)`` logits and an ``(N, H, W)`` integer target) become terms without a line of Python::

    loss:
      terms:
        dice:
          _target_: hazardseg.losses.LibraryLoss
          weight: 1.0
          fn: {_target_: segmentation_models_pytorch.losses.DiceLoss, _partial_: true, mode: multiclass}

``fn`` is a *factory* (``_partial_: true``): the term builds it with ``ignore_index=IGNORE_LABEL``, and hands
it the target with pasted-outlier pixels mapped to IGNORE_LABEL too, so ignored pixels, crop padding and
outliers are left out exactly as plain cross-entropy leaves them out (:mod:`hazardseg.losses.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from hazardseg.errors import ConfigError
from hazardseg.losses.base import IGNORE_LABEL, LossTerm, as_float, class_target


class LibraryLoss(LossTerm):
    """Args:
        fn: a factory of the loss module (``_partial_: true``); called as ``fn(ignore_index=255)``.
        weight, output: as every :class:`~hazardseg.losses.base.LossTerm`.
    """

    def __init__(self, fn: Callable[..., nn.Module], weight: float = 1.0, output: str = "logits"):
        super().__init__(weight, output)
        if isinstance(fn, nn.Module) or not callable(fn):
            raise ConfigError(f"fn: expected a loss factory (`_partial_: true` under fn), got {type(fn).__name__}. "
                              f"Fix: add `_partial_: true` to the fn entry (the term passes ignore_index itself)")
        try:
            self.fn = fn(ignore_index=IGNORE_LABEL)
        except TypeError as err:
            raise ConfigError(f"fn: {getattr(fn, 'func', fn)} takes no ignore_index ({err}): ignored and outlier pixels "
                              f"could not be left out. Fix: a loss with an ignore_index argument") from None

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        return self.fn(as_float(outputs[self.output]), class_target(batch["mask"]))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fn={type(self.fn).__name__}"
