"""Losses as a configured mapping of weighted terms (``loss.terms.<name>``), summed by :class:`CompositeLoss`.

Every term reads the network's outputs (contract: :mod:`hazardseg.models.outputs`) and the batch, and
returns an unweighted scalar; :class:`CompositeLoss` weights and sums them and reports each term.
Terms see one target convention, whatever the dataset's own ignore label:

- ``0 .. K-1``: known classes;
- :data:`IGNORE_LABEL` (255): not trained on (the dataset's ignore label, crop padding);
- :data:`OUTLIER_LABEL` (254): pixels of pasted outlier objects (``data.outliers``). Plain
  cross-entropy ignores them; outlier-exposure terms train on them.

A new training method is one :class:`LossTerm` subclass in its own file plus one ``conf/loss/<name>.yaml``
that lists its terms (and the heads and outlier data it needs). Terms are a mapping rather than a
list so that a command line can change one of them: ``loss.terms.aux.weight=0.2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from hazardseg.data.labels import IGNORE_LABEL, OUTLIER_LABEL
from hazardseg.errors import ConfigError


class LossTerm(nn.Module):
    """One term of the loss. ``output`` names the network output it reads (default ``logits``).

    ``reads_queries``: the term trains a mask-classification network through its query outputs
    (``class_logits`` / ``mask_logits``). A query network needs at least one such term: per-pixel terms
    alone would train its semantic scores ``s`` as if they were logits."""

    reads_queries: bool = False

    def __init__(self, weight: float = 1.0, output: str = "logits"):
        super().__init__()
        self.weight = float(weight)
        self.output = output

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Tensor:
        """Unweighted scalar; ``batch["mask"]`` follows the convention in the module docstring."""
        raise NotImplementedError

    @property
    def uses_outliers(self) -> bool:
        """True for terms that learn from OUTLIER_LABEL pixels (they need ``data.outliers``)."""
        return False

    def check(self, num_classes: int) -> None:
        """Called once at start with the dataset's class count: raise ConfigError (``<kwarg>=...: ...``)
        for options that do not fit it, instead of failing at the first training step."""

    @property
    def needs_class_counts(self) -> bool:
        """True for terms whose configuration depends on the training split's class distribution."""
        return False

    def set_class_counts(self, counts) -> None:
        """Receive the training split's per-class pixel counts (before training; see ``needs_class_counts``)."""

    def extra_repr(self) -> str:
        return f"weight={self.weight}, output={self.output!r}"


class CompositeLoss(nn.Module):
    """``sum_t weight_t * term_t(outputs, batch)``; returns ``{"loss": total, <term>: value, ...}``.

    Args:
        terms: name -> :class:`LossTerm` (instantiated from ``loss.terms``); ``null`` entries are dropped,
            so a recipe can switch off a term it inherits (``loss.terms.ce: null``).
        ignore_index: the dataset's ignore label (``data.ignore_index``), mapped to IGNORE_LABEL.
    """

    def __init__(self, terms: Mapping[str, LossTerm], ignore_index: int | None = None):
        super().__init__()
        terms = {name: term for name, term in terms.items() if term is not None}  # `ce: null` drops an inherited term
        if not terms:
            raise ConfigError("loss.terms is empty; give at least one term, e.g. loss=ce")
        for name, term in terms.items():
            if not isinstance(term, LossTerm):
                raise ConfigError(f"loss.terms.{name}: expected a hazardseg.losses.LossTerm (a `_target_` entry), got {type(term).__name__}")
            # a negative weight trains the method backwards under its name; NaN / inf poison every step
            if not (math.isfinite(term.weight) and term.weight >= 0):
                raise ConfigError(f"loss.terms.{name}.weight={term.weight}: weights must be finite and >= 0 "
                                  f"(0 switches a term off; `loss.terms.{name}: null` drops it)")
        if not any(term.weight > 0 for term in terms.values()):
            raise ConfigError(f"loss.terms: every weight is 0 ({', '.join(f'{n}.weight=0' for n in terms)}), so nothing "
                              f"would be trained; give at least one term a weight > 0")
        self.terms = nn.ModuleDict(dict(terms))
        self.ignore_index = ignore_index

    @property
    def required_outputs(self) -> dict[str, str]:
        """term name -> network output it reads (checked against the model's heads at start)."""
        return {name: term.output for name, term in self.terms.items()}

    def check_outputs(self, available: set[str]) -> None:
        """Every term must read an output the network produces in training (``net.output_names(training=True)``)."""
        from hazardseg.models.outputs import QUERY_KEYS

        for term, output in self.required_outputs.items():
            if output in QUERY_KEYS and output not in available:
                raise ConfigError(f"loss.terms.{term} trains a mask-classification network (it reads '{output}'), but the "
                                  f"model is a per-pixel network. Fix: model=mask2former, or a per-pixel loss (loss=ce)")
            if output not in available:
                raise ConfigError(
                    f"loss.terms.{term} reads the network output '{output}', but the model has no such head "
                    f"(outputs: {sorted(set(available) - {'feature_stride'})}). Fix: add model.heads.{output}, or use a loss option that adds it."
                )

    def check_outliers(self, paste: Any, num_classes: int | None = None) -> None:
        """Outlier-exposure terms need pasted outliers (``paste``: the datamodule's paste transform, None when it
        pastes none, see ``PasteOutliers.never_pastes``); without them they would train on nothing, silently."""
        if not self.uses_outliers:
            return
        terms = [name for name, term in self.terms.items() if term.uses_outliers]
        if paste is None:
            raise ConfigError(f"loss.terms.{terms[0]} learns from pasted outlier pixels, but data.outliers.enabled is false. "
                              f"Fix: data.outliers.enabled=true (the loss options set it), or a loss without outlier terms (loss=ce).")
        reason = paste.never_pastes(num_classes) if hasattr(paste, "never_pastes") else None
        if reason:
            raise ConfigError(f"{reason}, but loss.terms.{terms[0]} learns from pasted outlier pixels. Fix: paste some "
                              f"(the loss options' defaults do), or a loss without outlier terms (loss=ce)")

    @property
    def uses_outliers(self) -> bool:
        return any(term.uses_outliers for term in self.terms.values())

    def check_family(self, available: set[str], loss_choice: str | None = None) -> None:
        """A mask-classification network (``class_logits`` among its outputs) needs a term that reads its queries."""
        if "class_logits" in available and not any(term.reads_queries for term in self.terms.values()):
            given = f"loss={loss_choice}" if loss_choice else f"loss.terms ({', '.join(self.terms)})"
            raise ConfigError(f"{given} trains per-pixel logits only, but the model is a mask-classification network "
                              f"(model=mask2former) trained by its set criterion. Fix: loss=mask2former (its default; drop "
                              f"the loss option), or loss=rba / mask2anomaly / uno")

    def check(self, num_classes: int) -> None:
        for name, term in self.terms.items():
            try:
                term.check(num_classes)
            except ConfigError as err:
                raise ConfigError(f"loss.terms.{name}.{err}") from None

    @property
    def needs_class_counts(self) -> bool:
        return any(term.needs_class_counts for term in self.terms.values())

    def set_class_counts(self, counts) -> None:
        """Per-class pixel counts of the training split, for terms with class-balancing weights."""
        for term in self.terms.values():
            term.set_class_counts(counts)

    def forward(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        batch = {**batch, "mask": self.normalise_target(batch["mask"])}
        values = {name: term(outputs, batch) for name, term in self.terms.items()}
        values["loss"] = sum(self.terms[name].weight * value for name, value in values.items())
        return values

    def normalise_target(self, mask: Tensor) -> Tensor:
        if self.ignore_index is None or self.ignore_index == IGNORE_LABEL:
            return mask
        return mask.masked_fill(mask == self.ignore_index, IGNORE_LABEL)


def inliers(target: Tensor) -> Tensor:
    """Pixels of known classes (neither ignored nor outliers)."""
    return (target != IGNORE_LABEL) & (target != OUTLIER_LABEL)


def outliers(target: Tensor) -> Tensor:
    return target == OUTLIER_LABEL


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over ``mask``; an empty mask gives a zero that still carries the graph (DDP-safe)."""
    return values[mask].mean() if bool(mask.any()) else values.sum() * 0.0


def outlier_bce(logit: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of a per-pixel outlier logit: pasted outlier pixels 1, known-class pixels 0,
    averaged over both (ignored pixels do not count). Stable for any logit (softplus form)."""
    is_out = outliers(target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, is_out.to(logit.dtype), reduction="none")
    return masked_mean(bce, is_out | inliers(target))


def class_target(target: Tensor) -> Tensor:
    """Target for ``F.cross_entropy(ignore_index=IGNORE_LABEL)`` over known classes: outliers ignored."""
    return target.masked_fill(target == OUTLIER_LABEL, IGNORE_LABEL)


def as_float(x: Tensor) -> Tensor:
    # bf16/fp16 logits lose too much precision in log_softmax/logsumexp: losses are computed in fp32.
    return x.float() if x.dtype != torch.float64 else x
