"""Common interface of anomaly scorers (in the spirit of pytorch-ood's ``Detector``).

A scorer maps a segmentation network's per-pixel outputs to an anomaly map where *higher means
more anomalous*:

    scorer(logits)            # (N, C, H, W) -> (N, H, W) float32
    scorer(logits, features)  # feature-based heads also get the decoder features (N, D, H, W)

Scorers that need training statistics set ``requires_fit = True`` and implement ``fit``, which
consumes an iterable of ``{"logits": (N,C,H,W), "features"?: (N,D,H,W), "mask"?: (N,H,W) long}``
batches *streaming* (accumulate per-batch sums; never hold all outputs) and stores the result in
registered buffers, so ``state_dict()`` / ``load_state_dict()`` (and ``torch.save`` /
``torch.load(weights_only=True)``) persist it.

Adding a feature-based scorer (e.g. Mahalanobis/cosine distance to class prototypes) needs no
interface change: it is one subclass that reads ``features`` in ``score`` and in ``fit``
(accumulate per-class feature sums keyed by the predicted or ground-truth class), plus one YAML in
``conf/scorer/``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable

from torch import Tensor, nn

from hazardseg.errors import DataError, NotFittedError


class Scorer(nn.Module):
    """Maps a segmentation network's outputs to an anomaly map, higher = more anomalous.

    Subclasses implement :meth:`score` (called with float32 inputs); :meth:`forward` adds the
    fitted-check and the dtype contract, so every scorer behaves the same under AMP.
    """

    requires_fit: ClassVar[bool] = False
    # Bump when ``fit`` changes what it computes: saved statistics of older versions are then refitted.
    fit_version: ClassVar[int] = 1
    name: ClassVar[str] = "scorer"  # short name used in error messages

    def forward(self, logits: Tensor, features: Tensor | None = None) -> Tensor:
        if not self.is_fitted:
            raise NotFittedError(
                f"scorer '{self.name}' has no fitted statistics: call fit() on training outputs "
                "(the pipeline does this automatically) or load saved statistics"
            )
        if logits.ndim != 4:
            raise ValueError(f"scorer '{self.name}': expected logits (N,C,H,W), got {tuple(logits.shape)}")
        # bf16/fp16 logits lose too much precision in softmax/logsumexp: always compute in fp32.
        feats = None if features is None else features.float()
        return self.score(logits.float(), feats).float()

    def score(self, logits: Tensor, features: Tensor | None) -> Tensor:
        """(N, C, H, W) float32 logits -> (N, H, W) anomaly map."""
        raise NotImplementedError

    def fit(self, outputs: Iterable[dict[str, Tensor]]) -> "Scorer":
        """Estimate statistics from training outputs; stateless scorers do nothing."""
        return self

    @property
    def is_fitted(self) -> bool:
        return not self.requires_fit or self._has_statistics()

    def _has_statistics(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"requires_fit={self.requires_fit}"


def batch_logits(batch: Any, scorer_name: str) -> Tensor:
    """Pull float32 ``logits`` (N,C,H,W) out of one ``fit`` item, with a clear error otherwise."""
    if not isinstance(batch, dict) or "logits" not in batch:
        raise DataError(
            f"scorer '{scorer_name}'.fit: each item must be a dict with a 'logits' tensor (N,C,H,W); "
            f"got {type(batch).__name__}"
        )
    logits = batch["logits"]
    if not isinstance(logits, Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise DataError(f"scorer '{scorer_name}'.fit: 'logits' must be an (N,C,H,W) tensor, got {shape}")
    return logits.detach().float()


__all__ = ["Scorer", "batch_logits"]
