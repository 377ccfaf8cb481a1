"""Validation anomaly proxy: outliers pasted into validation images, identically every epoch.

StreetHazards' validation split has no anomalies, so an anomaly objective for hyperparameter search
(``objective=val/<scorer>/aupr``) needs a proxy: the datamodule option ``val_outliers`` takes a paste
transform (any callable on the sample dict that sets the pasted pixels of ``mask`` to
``OUTLIER_LABEL`` = 254, e.g. the ``data.outliers`` paste transform with another object seed and
``probability: 1``). It runs on the resized uint8 image before normalisation, under a torch seed made
of ``seed`` and the image name, so every epoch, worker count and process sees the same proxy split.
Pasted objects are a *proxy* for real anomalies (Meta-OoD / PEBAL style outlier exposure, Chan et al.
ICCV 2021; Tian et al. ECCV 2022): numbers on it rank models, they are not benchmark results.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from hazardseg.data.transforms import OUTLIER_LABEL, _finish, parse_image_size

__all__ = ["OUTLIER_LABEL", "SeededPerImage", "build_proxy_transform"]


class SeededPerImage(torch.nn.Module):
    """Run ``transform`` with torch's global RNG seeded from (``seed``, sample name); the caller's RNG
    state is restored afterwards, so training randomness is untouched."""

    def __init__(self, transform: Callable[[dict], dict], seed: int = 0):
        super().__init__()
        self.transform = transform
        self.seed = int(seed)

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(str(sample["name"]).encode()))
            return self.transform(sample)

    def extra_repr(self) -> str:
        return f"seed={self.seed}, transform={self.transform!r}"


def build_proxy_transform(image_size: Sequence[int], paste: Callable[[dict], dict], seed: int = 0) -> v2.Compose:
    """The eval transform with ``paste`` applied after the resize, on uint8 images."""
    return v2.Compose([v2.Resize(parse_image_size(image_size), antialias=True), SeededPerImage(paste, seed)] + _finish())
