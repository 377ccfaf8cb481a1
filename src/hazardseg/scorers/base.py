"""Common interface of anomaly scorers (in the spirit of pytorch-ood's ``Detector``).

A scorer maps a segmentation network's outputs (the dict of :mod:`hazardseg.models.outputs`) to an
anomaly map where *higher means more anomalous*:

    scorer(outputs)           # {"logits": (N,C,H,W), "features": ..., <head>: ...} -> (N, H, W) float32
    scorer(logits)            # shorthand for scorer({"logits": logits})

Post-hoc scorers implement ``score(logits, features)``; scorers of trained anomaly heads override
``score_outputs(outputs)`` to read their head's entry (e.g. ``outputs["void"]``) and name it in
``required_outputs``, so that a model without that head skips them instead of failing.

Scorers that need training statistics (SML, Mahalanobis) subclass :class:`FittedScorer`: its ``fit``
consumes an iterable of network outputs on training images (each dict also holds ``mask`` (N,H,W))
*streaming* -- the subclass's ``accumulate`` adds one batch to its per-batch sums, never holding all
outputs --, refuses an empty iterable, sums the accumulators over DDP ranks with the given ``reduce``
and hands them to the subclass's ``set_statistics``, which stores registered buffers, so
``state_dict()`` / ``load_state_dict()`` (and ``torch.save`` / ``torch.load(weights_only=True)``) persist them.

A new scorer is one subclass plus one YAML in ``conf/scorer/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from hazardseg.errors import DataError, NotFittedError
from hazardseg.maps import in_bands


class Scorer(nn.Module):
    """Maps a segmentation network's outputs to an anomaly map, higher = more anomalous.

    Subclasses implement :meth:`score` (float32 logits/features) or :meth:`score_outputs` (the whole
    output dict); :meth:`forward` adds the fitted-check and the dtype contract, so every scorer behaves
    the same under AMP.
    """

    requires_fit: ClassVar[bool] = False
    # Bump when ``fit`` changes what it computes: saved statistics of older versions are then refitted.
    fit_version: ClassVar[int] = 1
    name: ClassVar[str] = "scorer"  # short name used in error messages
    # Buffers that hold fitted statistics: they start empty and take the saved shape when loaded.
    statistics: ClassVar[tuple[str, ...]] = ()
    # ``score`` reads the logits only and treats every pixel on its own: the default ``score_outputs`` then runs
    # it on bands of rows on the CPU (:func:`hazardseg.maps.in_bands`; same values, 1.7-3.5x faster there).
    pixelwise: ClassVar[bool] = False
    # A pixelwise scorer that starts from each pixel's max logit and its class defines
    # ``score_with_max(logits, top, argmax)``; the default ``score_outputs`` then hands it the frame's
    # :func:`class_max`, computed once for all such scorers of a frame.
    score_with_max: ClassVar[Callable[..., Tensor] | None] = None

    def forward(self, outputs: Mapping[str, Any] | Tensor, features: Tensor | None = None) -> Tensor:
        if isinstance(outputs, Tensor):
            outputs = {"logits": outputs, "features": features}
        if not self.is_fitted:
            raise NotFittedError(
                f"scorer '{self.name}' has no fitted statistics: call fit() on training outputs "
                "(the pipeline does this automatically) or load saved statistics"
            )
        if outputs["logits"].ndim != 4:  # the output contract (hazardseg.models.outputs), query networks included
            raise ValueError(f"scorer '{self.name}': expected logits (N,C,H,W), got {tuple(outputs['logits'].shape)}")
        return self.score_outputs(outputs).float()

    @property
    def required_outputs(self) -> tuple[str, ...]:
        """Network outputs this scorer reads besides ``logits`` / ``features`` (e.g. a trained head's).

        A model without them cannot be scored: the pipeline skips such a scorer with a note, so that
        ``scorer=all`` works after training any method.
        """
        return ()

    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        """Network outputs -> (N, H, W) anomaly map; the default calls :meth:`score` in float32."""
        # bf16/fp16 logits lose too much precision in softmax/logsumexp: always compute in fp32.
        logits = outputs["logits"].float()
        if self.pixelwise and self.score_with_max is not None:
            return in_bands(self.score_with_max, logits, *class_max(logits))
        if self.pixelwise:
            return in_bands(lambda band: self.score(band, None), logits)
        features = outputs.get("features")
        return self.score(logits, None if features is None else features.float())

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        """(N, C, H, W) float32 logits (and decoder features, if any) -> (N, H, W) anomaly map."""
        raise NotImplementedError

    def fit(self, outputs: Iterable[Mapping[str, Any]], reduce: Callable[[Tensor], Tensor] | None = None) -> "Scorer":
        """Estimate statistics from network outputs on training images; stateless scorers do nothing.

        ``reduce`` sums a tensor over DDP ranks (identity on one process); apply it to the streamed
        accumulators before turning them into statistics, so every rank ends with the same statistics.
        """
        return self

    @property
    def is_fitted(self) -> bool:
        return not self.requires_fit or self._has_statistics()

    def _has_statistics(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"requires_fit={self.requires_fit}"

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Statistics buffers start empty (their size depends on the data), so take the saved shape before
        # the default copy_.
        for key in self.statistics:
            saved = state_dict.get(prefix + key)
            if isinstance(saved, Tensor):
                current = getattr(self, key)
                setattr(self, key, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# logits tensor -> (its layout, its class_max): a frame's maps, kept while the logits live (keyed by identity: a
# tensor's == is elementwise)
_CLASS_MAX: WeakIdKeyDictionary = WeakIdKeyDictionary()


def class_max(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(N, H, W) max logit and its class (``torch.max``'s index) of every pixel of (N, C, H, W) ``logits``, computed
    once per logits tensor (on bands of rows on the CPU) and shared by the scorers that start from them (max logit,
    entropy, SML): each would read the whole logits again for them, ~25 ms for 13 classes at 2048x1024 on 2 CPU
    cores. The values are those of ``logits.max(dim=1)``; scorers only read the logits, never change them."""
    if torch.jit.is_tracing():  # export.py: a traced graph must compute them, not hold a frame's values
        return tuple(logits.max(dim=1))
    layout = (logits.data_ptr(), tuple(logits.shape), logits.stride(), logits.dtype)
    cached = _CLASS_MAX.get(logits)
    if cached is not None and cached[0] == layout:
        return cached[1]
    found = tuple(in_bands(lambda band: tuple(band.max(dim=1)), logits))
    _CLASS_MAX[logits] = (layout, found)
    return found


class FittedScorer(Scorer):
    """A scorer with statistics fitted on training outputs. Subclasses implement :meth:`accumulate` (one
    batch into the streamed sums) and :meth:`set_statistics` (sums -> buffers); the loop, the empty check
    and the DDP reduce are this base's."""

    requires_fit = True

    @torch.no_grad()
    def fit(self, outputs: Iterable[Mapping[str, Any]], reduce: Callable[[Tensor], Tensor] | None = None) -> "FittedScorer":
        sums: tuple[Tensor, ...] | None = None
        for batch in outputs:
            sums = self.accumulate(batch, sums)
        if sums is None:
            raise DataError(f"scorer '{self.name}'.fit: got no batches; fit needs the network's outputs on training images")
        if reduce is not None:  # sum the streamed accumulators over DDP ranks
            sums = tuple(reduce(t) for t in sums)
        self.set_statistics(*sums)
        return self

    def accumulate(self, batch: Mapping[str, Any], sums: tuple[Tensor, ...] | None) -> tuple[Tensor, ...]:
        """Add one batch of training outputs to ``sums`` (None before the first batch: create them) and return them."""
        raise NotImplementedError

    def set_statistics(self, *sums: Tensor) -> None:
        """Turn the (rank-summed) accumulators into the statistics buffers."""
        raise NotImplementedError


class HeadScorer(Scorer):
    """A scorer of one trained head's output (``outputs[output]``, e.g. ``void``): models without that
    head skip it (see :attr:`Scorer.required_outputs`)."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    @property
    def required_outputs(self) -> tuple[str, ...]:
        return (self.output,)

    def extra_repr(self) -> str:
        return f"output={self.output!r}"


def batch_logits(batch: Any, scorer_name: str) -> Tensor:
    """Pull float32 ``logits`` (N,C,H,W) out of one ``fit`` item, with a clear error otherwise."""
    if not isinstance(batch, Mapping) or "logits" not in batch:
        raise DataError(
            f"scorer '{scorer_name}'.fit: each item must be a dict with a 'logits' tensor (N,C,H,W); "
            f"got {type(batch).__name__}"
        )
    logits = batch["logits"]
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise DataError(f"scorer '{scorer_name}'.fit: 'logits' must be an (N,C,H,W) tensor, got {shape}")
    return logits.detach().float()


__all__ = ["FittedScorer", "HeadScorer", "Scorer", "batch_logits"]
