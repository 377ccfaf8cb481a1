"""Anomaly scorers: per-pixel maps from segmentation outputs, higher = more anomalous.

Configs live in ``conf/scorer/<name>.yaml``, each nesting its scorer under its own name so several
can be selected at once (``scorer=[msp,sml]`` or ``scorer=all``); :func:`build_scorers` turns that
mapping into ``{name: Scorer}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hazardseg.errors import ConfigError, HazardsegError
from hazardseg.scorers.base import Scorer
from hazardseg.scorers.postprocess import BoundarySuppression, DilatedSmoothing
from hazardseg.scorers.sml import SML
from hazardseg.scorers.softmax import MSP, Energy, Entropy, MaxLogit


def build_scorers(cfg_scorer: Mapping[str, Any] | None) -> dict[str, Scorer]:
    """Instantiate every ``name: {_target_: ..., **kwargs}`` entry of ``cfg.scorer``.

    Raises :class:`ConfigError` naming the offending ``scorer.<name>`` key if an entry is not a
    mapping with a ``_target_``, cannot be instantiated, or does not build a :class:`Scorer`.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if cfg_scorer is None:
        return {}
    if isinstance(cfg_scorer, DictConfig):
        cfg_scorer = OmegaConf.to_container(cfg_scorer, resolve=True)
    if not isinstance(cfg_scorer, Mapping):
        raise ConfigError(f"scorer: expected a mapping name -> {{_target_: ...}}, got {type(cfg_scorer).__name__}")
    if "_target_" in cfg_scorer:
        raise ConfigError(
            "scorer: found a bare '_target_'; nest each scorer under its name, e.g. scorer: {msp: {_target_: ...}}"
        )
    scorers: dict[str, Scorer] = {}
    for name, entry in cfg_scorer.items():
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ConfigError(
                f"scorer.{name}: expected a mapping with a '_target_' (e.g. hazardseg.scorers.MSP), got {entry!r}"
            )
        try:
            scorer = instantiate(entry)
        except InstantiationException as e:
            cause = e.__cause__ if isinstance(e.__cause__, HazardsegError) else e
            raise ConfigError(f"scorer.{name}: {cause}".replace("\n", " ")) from e
        if not isinstance(scorer, Scorer):
            raise ConfigError(f"scorer.{name}: {entry['_target_']} built a {type(scorer).__name__}, not a Scorer")
        scorer.hparams = dict(entry)  # what its fitted statistics depend on (cache key)
        scorers[str(name)] = scorer
    return scorers


def applicable_scorers(scorers: dict[str, Scorer], net) -> dict[str, Scorer]:
    """Drop (with a note) scorers that read an output this network does not produce (``net.output_names``),
    e.g. ``void`` after ``loss=ce``: ``scorer=all`` then works after training any method, and reports what it
    could score."""
    available = net.output_names(training=False)
    kept = {}
    for name, scorer in scorers.items():
        missing = [o for o in scorer.required_outputs if o not in available]
        if missing:
            print(f"[hazardseg] scorer '{name}' skipped: it reads the network output '{missing[0]}', which this model "
                  f"does not produce (a loss option that trains it adds model.heads.{missing[0]})", flush=True)
        else:
            kept[name] = scorer
    return kept


__all__ = [
    "MSP",
    "SML",
    "BoundarySuppression",
    "DilatedSmoothing",
    "Energy",
    "Entropy",
    "MaxLogit",
    "Scorer",
    "applicable_scorers",
    "build_scorers",
]
