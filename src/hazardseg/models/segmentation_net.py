"""An SMP architecture plus the two things SMP lacks: an auxiliary segmentation head on an encoder
stage, and a swappable classification head (linear 1x1 conv, or distance-to-prototype).

``forward`` returns a dict so scorers can use more than logits:
``logits`` (N,K,H,W) at input size, ``features`` (decoder output), and in training ``aux_logits``.
"""

from __future__ import annotations

import torch.nn.functional as F
import segmentation_models_pytorch as smp
from torch import Tensor, nn

from hazardseg.errors import ConfigError
from hazardseg.models.aux_head import AuxSegmentationHead
from hazardseg.models.distance_head import DistanceHead
from hazardseg.models.weights import check_download_possible, is_local_weights, load_local_encoder_weights

HEADS = ("linear", "distance")


class SegmentationNet(nn.Module):
    def __init__(
        self,
        arch: str = "DeepLabV3Plus",
        num_classes: int = 13,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        head: str = "linear",
        aux_stage: int | None = None,
        freeze_encoder: bool = False,
        **arch_kwargs,
    ):
        super().__init__()
        self.net = _build_smp(arch, num_classes, encoder_name, encoder_weights, arch_kwargs)
        self.pad_multiple = _input_multiple(self.net)
        if head == "distance":
            in_ch = self.net.segmentation_head[0].in_channels
            self.net.segmentation_head = nn.Sequential(
                DistanceHead(in_ch, num_classes), *list(self.net.segmentation_head)[1:]
            )
        elif head != "linear":
            raise ConfigError(f"model.head={head!r}: unknown head. Fix: one of {HEADS}.")
        self.aux_stage = aux_stage
        self.aux_head = None
        if aux_stage is not None:
            in_ch = self.net.encoder.out_channels[aux_stage]
            self.aux_head = AuxSegmentationHead(in_ch, num_classes)
        if freeze_encoder:
            self.net.encoder.requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        size = image.shape[-2:]
        image = _pad_to_multiple(image, self.pad_multiple)
        stages = self.net.encoder(image)
        features = self.net.decoder(stages)
        logits = self.net.segmentation_head(features)
        out = {"logits": _crop(logits, size), "features": features}
        # The aux head is deep supervision only: skipped at inference, so exported models never pay for it.
        if self.aux_head is not None and self.training:
            aux = self.aux_head(stages[self.aux_stage])
            out["aux_logits"] = F.interpolate(aux, size=image.shape[-2:], mode="bilinear", align_corners=False)
            out["aux_logits"] = _crop(out["aux_logits"], size)
        return out


def _build_smp(arch: str, num_classes: int, encoder_name: str, weights: str | None, kwargs: dict) -> nn.Module:
    model_cls = getattr(smp, arch, None)
    if model_cls is None or not isinstance(model_cls, type):
        raise ConfigError(f"model.arch={arch!r}: not a segmentation_models_pytorch architecture (e.g. DeepLabV3Plus, Unet, FPN).")
    local = is_local_weights(weights)
    if weights is not None and not local:
        check_download_possible(weights, encoder_name)
    try:
        model = model_cls(encoder_name=encoder_name, encoder_weights=None if local else weights, classes=num_classes, **kwargs)
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"model: cannot build {arch}(encoder_name={encoder_name!r}, ...): {err}") from err
    if local:
        load_local_encoder_weights(model.encoder, weights)
    return model


def _input_multiple(model: nn.Module) -> int:
    # SMP rejects inputs not divisible by the encoder's output stride; we pad instead so any image size
    # (e.g. 720x1280 full-resolution evaluation with a stride-32 U-Net) just works.
    return int(getattr(model.encoder, "output_stride", 32))


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x


def _crop(x: Tensor, size) -> Tensor:
    return x[..., : size[0], : size[1]]
