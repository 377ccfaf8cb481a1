"""An SMP architecture plus configured heads (:mod:`hazardseg.models.head`): the per-pixel network family.

It implements the network protocol (:mod:`hazardseg.models.base`); ``forward`` follows the contract in
:mod:`hazardseg.models.outputs`: ``logits`` at input size,
``features`` (the decoder output) with their ``feature_stride``, and one entry per head.
Inputs of any size work: they are padded to the encoder's stride and every output is cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hazardseg.errors import ConfigError
from hazardseg.maps import crop, pad_to_multiple
from hazardseg.models.base import SegmentationNetwork
from hazardseg.models.head import Head
from hazardseg.models.outputs import RESERVED_KEYS, SegmentationOutput
from hazardseg.models.weights import check_download_possible, is_local_weights, load_local_encoder_weights

CLASSIFIER_HEAD = "logits"  # a head under this name replaces SMP's linear classifier


class SegmentationNet(SegmentationNetwork):
    def __init__(
        self,
        arch: str = "DeepLabV3Plus",
        num_classes: int = 13,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        heads: Mapping[str, Head] | None = None,
        freeze_encoder: bool = False,
        channels_last: bool = False,
        **arch_kwargs,
    ):
        super().__init__()
        self.num_classes = num_classes
        if not isinstance(channels_last, bool):
            raise ConfigError(f"model.channels_last={channels_last!r}: expected true or false")
        self.channels_last = channels_last
        self.net = _build_smp(arch, num_classes, encoder_name, encoder_weights, arch_kwargs)
        self.pad_multiple = _input_multiple(self.net)
        decoder_channels = self.net.segmentation_head[0].in_channels
        self.heads = nn.ModuleDict()
        for name, head in (heads or {}).items():
            head = _check_head(name, head)
            in_channels = decoder_channels if head.in_stage is None else _stage_channels(self.net, name, head.in_stage)
            head.build(in_channels, num_classes)
            if name == CLASSIFIER_HEAD:
                if head.in_stage is not None or head.training_only:
                    raise ConfigError("model.heads.logits replaces the classifier: it must read the decoder (in_stage: null) and not be training_only")
                self.net.segmentation_head[0] = head  # keeps SMP's upsampling of the logits
            else:
                self.heads[name] = head
        if freeze_encoder:
            self.net.encoder.requires_grad_(False)
        if channels_last:
            # NHWC weights and activations: oneDNN (CPU) and cuDNN (tensor cores) run most convolutions faster
            # in this layout (measured 1.1x per training step on CPU, bench/bench_train_step.py). Values are unchanged.
            self.to(memory_format=torch.channels_last)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = list(self.net.encoder.parameters())
        heads = list(self.heads.parameters())
        taken = {id(p) for p in encoder + heads}
        return {"encoder": encoder, "decoder": [p for p in self.parameters() if id(p) not in taken], "heads": heads}

    def output_names(self, training: bool) -> set[str]:
        """Keys :meth:`forward` returns in training (``True``) or eval mode."""
        return set(RESERVED_KEYS) | {n for n, h in self.heads.items() if training or not h.training_only}

    def forward(self, image: Tensor) -> SegmentationOutput:
        size = image.shape[-2:]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        padded = pad_to_multiple(image, self.pad_multiple)
        stages = self.net.encoder(padded)
        features = self.net.decoder(stages)
        stride = padded.shape[-1] // features.shape[-1]
        out: SegmentationOutput = {
            "logits": crop(_in_float32(self.net.segmentation_head, features), size),
            "features": features,
            "feature_stride": stride,
        }
        for name, head in self.heads.items():
            if head.training_only and not self.training:
                continue  # deep supervision only: inference never pays for it
            if head.in_stage is None:  # upsampled exactly like the logits (SMP's upsampling module)
                value = self.net.segmentation_head[1](head(features) if head.training_only else _in_float32(head, features))
            else:
                value = F.interpolate(head(stages[head.in_stage]), size=padded.shape[-2:], mode="bilinear", align_corners=False)
            out[name] = crop(value, size)
        return out


def _in_float32(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` in float32 even under mixed precision: the outputs that anomaly scores read.

    bf16 keeps 8 significant bits, so bf16 logits near 12 are 0.0625 apart: MaxLogit / MSP maps of a
    trained model would collapse into a few hundred ties (and AUROC/FPR95 with them). A 1x1 classifier
    (and its upsampling) in float32 costs next to nothing; the features before it stay in the AMP dtype."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return module(x)
    with torch.autocast(device_type=device, enabled=False):
        return module(x.float())


def _check_head(name: str, head: object) -> Head:
    if not isinstance(head, Head):
        raise ConfigError(f"model.heads.{name}: expected a hazardseg.models.Head (a `_target_` entry), got {type(head).__name__}")
    if name in RESERVED_KEYS and name != CLASSIFIER_HEAD:
        raise ConfigError(f"model.heads.{name}: '{name}' is a reserved output name; choose another head name")
    return head


def _stage_channels(model: nn.Module, name: str, stage: int) -> int:
    channels = model.encoder.out_channels
    if not -len(channels) <= stage < len(channels):
        raise ConfigError(f"model.heads.{name}.in_stage={stage}: the encoder has stages 0..{len(channels) - 1} (or -1..-{len(channels)})")
    return channels[stage]


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
