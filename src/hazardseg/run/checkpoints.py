"""Reading hazardseg checkpoints and loading their network weights: the one place, always ``weights_only``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hazardseg.errors import ConfigError


def load_checkpoint(ckpt: Path) -> dict:
    """The checkpoint's payload, loaded safely (tensors and primitives only), or a one-line ConfigError."""
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, not a torch file, unsafe pickle
        raise ConfigError(f"ckpt_path={ckpt}: cannot be loaded safely ({type(err).__name__}: {str(err)[:120]}). Fix: use an intact checkpoint written by train.py.") from err


def read_checkpoint_meta(ckpt: Path) -> dict[str, Any]:
    """What train.py stored beside the weights: the training config, its hash, data env vars, choices, W&B run."""
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={ckpt}: file not found. Fix: point ckpt_path to a .ckpt written by train.py (see results.json 'checkpoint').")
    meta = load_checkpoint(ckpt).get("hazardseg")
    if not meta or "config" not in meta:
        raise ConfigError(f"ckpt_path={ckpt}: not a hazardseg checkpoint (no 'hazardseg' config inside). Fix: use a checkpoint written by train.py.")
    return meta


def matching_net_state(net: nn.Module, ckpt: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's network weights, or a ConfigError if they do not fit ``net``."""
    state = load_checkpoint(Path(ckpt)).get("state_dict", {})
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    own = net.state_dict()
    missing = [k for k in own if k not in net_state]
    unexpected = [k for k in net_state if k not in own]
    shapes = [k for k in own if k in net_state and own[k].shape != net_state[k].shape]
    if missing or unexpected or shapes:
        detail = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches (e.g. {(shapes or missing or unexpected)[:2]})"
        raise ConfigError(
            f"ckpt_path={ckpt}: checkpoint does not match the configured model/class count ({detail}). "
            f"Fix: use the model and data config it was trained with."
        )
    return net_state


def load_net_weights(net: nn.Module, ckpt: Path) -> None:
    """Load only the network weights (safe ``weights_only`` load); a different model is a clear error."""
    net.load_state_dict(matching_net_state(net, ckpt))
