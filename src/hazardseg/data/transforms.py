"""Image/mask transforms built on ``torchvision.transforms.v2``.

Samples are dicts ``{"image": tv_tensors.Image (3,H,W) uint8, "mask": tv_tensors.Mask (H,W) int64,
"name": str}``. Because image and mask are typed tv_tensors, every geometric op is applied to both
with the same random parameters (masks are resized with NEAREST automatically), while photometric
ops (ColorJitter, Normalize) touch only the image.

Training pipeline (each step switchable from ``data.augment``)::

    RandomScale(image_size, scale)   # resize straight to image_size * s, s ~ U(scale); else Resize(image_size)
    RandomCrop(image_size, pad)      # crop back to image_size; pads the image with 0, the mask with
                                     # ignore_index (or PAD_LABEL=255 when there is none, which the loss
                                     # ignores). scale without crop is a ConfigError
    RandomHorizontalFlip             # hflip
    PasteOutliers                    # data.outliers.enabled (hazardseg.data.outliers): uint8, after the
                                     # geometry, before the jitter so that scene and objects are re-lit alike
    ColorJitter(b, c, s)             # color_jitter
    ToDtype(float32, scale) + Normalize(ImageNet)

Eval pipeline: Resize(image_size) + ToDtype + Normalize.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from hazardseg.data.labels import OUTLIER_LABEL, PAD_LABEL  # noqa: F401  (re-exported: reserved mask values)
from hazardseg.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_AUGMENT: dict[str, Any] = {"scale": None, "crop": False, "hflip": False, "color_jitter": None}


def _plain(obj: Any) -> Any:
    """OmegaConf containers -> plain python (hydra passes DictConfig/ListConfig by default)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


def parse_image_size(image_size: Any, key: str = "data.image_size") -> tuple[int, int]:
    image_size = _plain(image_size)
    if isinstance(image_size, int):
        image_size = [image_size, image_size]
    if (
        not isinstance(image_size, Sequence)
        or isinstance(image_size, str)
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise ConfigError(f"{key}={image_size!r}: expected [height, width] as two positive ints, e.g. {key}=[360,640]")
    return int(image_size[0]), int(image_size[1])


def parse_augment(augment: Any, key: str = "data.augment") -> dict[str, Any]:
    """Validate the ``augment`` dict; unknown keys and malformed values raise ConfigError."""
    augment = _plain(augment)
    if augment is None or augment is False:
        return dict(DEFAULT_AUGMENT)
    if not isinstance(augment, Mapping):
        raise ConfigError(f"{key}={augment!r}: expected a dict with keys {sorted(DEFAULT_AUGMENT)}")
    unknown = set(augment) - set(DEFAULT_AUGMENT)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_AUGMENT)}")
    out = dict(DEFAULT_AUGMENT)
    out.update(augment)
    scale = out["scale"]
    if scale is not None:
        if (
            not isinstance(scale, Sequence)
            or len(scale) != 2
            or not all(isinstance(v, (int, float)) for v in scale)
            or not 0 < scale[0] <= scale[1]
        ):
            raise ConfigError(f"{key}.scale={scale!r}: expected [min, max] with 0 < min <= max (e.g. [0.5, 2.0]) or null")
        out["scale"] = (float(scale[0]), float(scale[1]))
    for flag in ("crop", "hflip"):
        if not isinstance(out[flag], bool):
            raise ConfigError(f"{key}.{flag}={out[flag]!r}: expected true or false")
    if out["scale"] is not None and not out["crop"]:
        raise ConfigError(
            f"{key}.scale={list(out['scale'])} needs {key}.crop=true (the random crop brings a scaled sample back "
            f"to data.image_size so batches stack); set {key}.crop=true or {key}.scale=null"
        )
    cj = out["color_jitter"]
    if cj is not None:
        if (
            not isinstance(cj, Sequence)
            or len(cj) != 3
            or not all(isinstance(v, (int, float)) and v >= 0 for v in cj)
        ):
            raise ConfigError(f"{key}.color_jitter={cj!r}: expected [brightness, contrast, saturation] >= 0 or null")
        out["color_jitter"] = tuple(float(v) for v in cj)
    return out


class RandomScale(torch.nn.Module):
    """Resize image and mask together to ``image_size * s`` with ``s ~ U(lo, hi)`` (torch RNG)."""

    def __init__(self, image_size: tuple[int, int], scale: tuple[float, float]):
        super().__init__()
        self.image_size = image_size
        self.scale = scale

    def forward(self, sample: Any) -> Any:
        lo, hi = self.scale
        s = lo + (hi - lo) * torch.rand(()).item()
        h = max(1, round(self.image_size[0] * s))
        w = max(1, round(self.image_size[1] * s))
        return v2.Resize((h, w), antialias=True)(sample)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, scale={self.scale}"


def _finish() -> list[Any]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def build_train_transform(
    image_size: Sequence[int],
    augment: Mapping[str, Any] | None,
    ignore_index: int | None,
    outliers: Callable[[Any], Any] | None = None,
) -> v2.Compose:
    """``outliers``: a ready outlier-paste transform (``hazardseg.data.outliers.build_paste_transform``) or None."""
    size = parse_image_size(image_size)
    aug = parse_augment(augment)
    ops: list[Any] = []
    if aug["scale"] is not None:
        ops.append(RandomScale(size, aug["scale"]))
    else:
        ops.append(v2.Resize(size, antialias=True))
    if aug["crop"]:
        fill_mask = PAD_LABEL if ignore_index is None else int(ignore_index)
        ops.append(v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: fill_mask}))
    if aug["hflip"]:
        ops.append(v2.RandomHorizontalFlip(0.5))
    if outliers is not None:
        ops.append(outliers)
    if aug["color_jitter"] is not None:
        b, c, s = aug["color_jitter"]
        ops.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s))
    return v2.Compose(ops + _finish())


def build_eval_transform(image_size: Sequence[int]) -> v2.Compose:
    size = parse_image_size(image_size)
    return v2.Compose([v2.Resize(size, antialias=True)] + _finish())


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of the ImageNet normalization: (..,3,H,W) float -> [0,1] float."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)
