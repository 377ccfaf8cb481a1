"""``instantiate`` that keeps our one-line errors: Hydra wraps exceptions raised by a ``_target_`` in
an InstantiationException with a multi-line message; we re-raise the user-fixable error inside it."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate

from hazardseg.errors import ConfigError, HazardsegError


def instantiate(cfg: Any, key: str = "", **kwargs: Any) -> Any:
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, HazardsegError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        reason = repr(err.__cause__) if err.__cause__ is not None else str(err).strip().splitlines()[0]
        raise ConfigError(f"{key or 'config'}: cannot instantiate {cfg.get('_target_')!r}: {reason}") from err
