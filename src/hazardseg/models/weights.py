"""Encoder weights: ``imagenet`` (hub download), ``null`` (random init) or a local ``.pth`` file.

SMP >= 0.5 fetches weights from the Hugging Face hub and, offline, retries for ~30 s before failing
with a generic message. We probe the network first (3 s) so an offline machine fails at once with
the fix spelled out.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from hazardseg.errors import ConfigError

HUB_HOST = "huggingface.co"


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_local_weights(weights: str | None) -> bool:
    return weights is not None and (weights.endswith((".pth", ".pt", ".bin", ".safetensors")) or os.sep in weights)


def check_download_possible(weights: str, encoder_name: str) -> None:
    """Raise a one-line ConfigError when named weights cannot be downloaded (and are not cached)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # the user says the hub cache holds them; SMP reads it without network
    if not hub_reachable():
        raise ConfigError(
            f"model.encoder_weights={weights}: cannot download '{encoder_name}' weights ({HUB_HOST} unreachable). "
            f"Fix: train from scratch with model.encoder_weights=null, or download the encoder's ImageNet "
            f"state_dict on a connected machine and pass model.encoder_weights=/path/to/file.pth "
            f"(or set HF_HUB_OFFLINE=1 if it is already in the Hugging Face cache)."
        )


def load_local_encoder_weights(encoder: nn.Module, path: str) -> None:
    """Load a state_dict file into an SMP encoder.

    Accepts a plain backbone state_dict (e.g. torchvision's ``resnet50-*.pth``; classifier keys ``fc.*``
    are dropped), or any checkpoint whose keys contain ``encoder.`` (a hazardseg/Lightning ``.ckpt``, an
    SMP model): its encoder part is loaded, e.g. to fine-tune on Pet from a Cityscapes-trained model.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.encoder_weights={path}: file not found. Fix: give an existing .pth file or null.")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if any("encoder." in k for k in state):  # a whole-model or Lightning checkpoint: keep its encoder part
        state = {k.split("encoder.", 1)[1]: v for k, v in state.items() if "encoder." in k}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not unexpected and len(missing) <= 0.1 * len(own):
        own.update(state)
        try:
            encoder.load_state_dict(own)
        except RuntimeError as err:  # same names, other shapes: another encoder size
            unexpected = [str(err).splitlines()[-1].strip()]
    if unexpected or len(missing) > 0.1 * len(own):
        raise ConfigError(
            f"model.encoder_weights={path}: does not match encoder "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]}). "
            f"Fix: use weights saved from the same encoder_name."
        )
