"""Build callbacks and loggers from their config groups (as lightning-hydra-template's ``instantiators.py``).

``cfg.callbacks`` and ``cfg.logger`` map names to ``_target_`` entries; an entry set to ``null`` (e.g.
``callbacks.panels=null`` on the command line) is dropped, and so is a factory that returns ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger

from hazardseg.config import instantiate
from hazardseg.errors import ConfigError


def instantiate_callbacks(cfg: Mapping[str, Any] | None) -> list[Callback]:
    return _instantiate_group(cfg, "callbacks", Callback)


def instantiate_loggers(cfg: Mapping[str, Any] | None) -> list[Logger]:
    return _instantiate_group(cfg, "logger", Logger)


def _instantiate_group(cfg: Mapping[str, Any] | None, group: str, kind: type) -> list:
    built = []
    for name, entry in (cfg or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ConfigError(f"{group}.{name}: expected a mapping with a `_target_`, got {entry!r}")
        obj = instantiate(entry, key=f"{group}.{name}")
        if obj is None:
            continue
        if not isinstance(obj, kind):
            raise ConfigError(f"{group}.{name}: {entry['_target_']} built a {type(obj).__name__}, not a {kind.__name__}")
        built.append(obj)
    return built
