"""Mask2Former (Cheng et al., CVPR 2022): the mask-classification network family, from Hugging Face transformers.

The network is transformers' ``Mask2FormerForUniversalSegmentation``, built from a ``Mask2FormerConfig``
given in YAML (``model.config``; its ``backbone_config`` a timm backbone or a Swin config) or loaded with
``from_pretrained`` (``model.pretrained``: a hub id or a local folder written by ``save_pretrained``).
Nothing of it is re-implemented here: this module adapts its outputs to the network protocol
(:mod:`hazardseg.models.base`) and brings its criterion (:class:`~hazardseg.losses.mask_classification.MaskClassificationLoss`,
transformers' own Hungarian-matching set loss).

``forward`` returns, per the output contract (:mod:`hazardseg.models.outputs`): ``class_logits``
(N, Q, K+1), ``mask_logits`` at stride 4, ``logits`` = the semantic scores ``s`` at input size,
``features`` = the pixel decoder's mask features (stride 4) and, in training, ``query_aux`` (the
predictions of every earlier decoder layer, for deep supervision). Inputs of any size work: they are
padded to a multiple of 32 (the backbone's last stride) and the outputs cropped back.

With ``negative_class: true`` the classifier has one more class (index K, before "no object"): a
negative class trained on pasted outliers (UNO, ``loss=uno``); ``logits`` keeps the K known classes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hazardseg.errors import ConfigError
from hazardseg.maps import crop, pad_to_multiple
from hazardseg.models.base import SegmentationNetwork
from hazardseg.models.outputs import SegmentationOutput, semantic_scores
from hazardseg.models.weights import HUB_HOST, hub_reachable

INSTALL_HINT = 'pip install -e ".[mask]"  (transformers + timm)'
MASK_STRIDE = 4  # Mask2Former's common_stride: mask logits and mask features at 1/4 of the input


def import_transformers():
    """transformers' Mask2Former classes, or a one-line error naming the install command."""
    try:
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
    except ImportError as err:
        raise ConfigError(f"model=mask2former needs Hugging Face transformers ({err}). Fix: {INSTALL_HINT}") from None
    return Mask2FormerConfig, Mask2FormerForUniversalSegmentation


class Mask2FormerNet(SegmentationNetwork):
    """transformers' Mask2Former behind the network protocol.

    Args:
        num_classes: K known classes (``data.num_classes``).
        config: ``Mask2FormerConfig`` keyword arguments (``backbone_config`` as a mapping with its
            ``model_type``: ``timm_backbone`` or ``swin``); ignored for the architecture when
            ``pretrained`` is given (the checkpoint's own config is used).
        pretrained: null, a hub id (``facebook/mask2former-swin-base-IN21k-cityscapes-semantic``) or a local
            folder written by ``save_pretrained``; its label count must be K (+1 with ``negative_class``).
        negative_class: one more class output for a negative class trained on pasted outliers (UNO).
        criterion: keyword arguments of the loss the network brings (``loss=mask2former``'s term) when the
            run's ``loss`` is null.
    """

    def __init__(self, num_classes: int = 13, config: Mapping[str, Any] | None = None, pretrained: str | None = None,
                 negative_class: bool = False, criterion: Mapping[str, Any] | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.negative_class = bool(negative_class)
        self.num_labels = self.num_classes + int(self.negative_class)  # class outputs besides "no object"
        self.criterion_kwargs = dict(criterion or {})
        self.hf = _load_pretrained(pretrained, self.num_labels, self.negative_class) if pretrained else _build(config or {}, self.num_labels)
        # transformers' model holds its own copy of the set loss (used when labels are passed to it). Ours is the
        # loss option's (hazardseg.losses.mask_classification); dropping this one keeps its class-weight buffer
        # out of checkpoints, where it would tie the state to the class count (init_from with a negative class).
        self.hf.criterion = None
        self.pad_multiple = 32

    # ------------------------------------------------------------------ network protocol
    def output_names(self, training: bool) -> set[str]:
        names = {"logits", "features", "feature_stride", "class_logits", "mask_logits"}
        if self.negative_class:
            names.add("negative_class")
        if training and self.hf.config.use_auxiliary_loss:
            names.add("query_aux")
        return names

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """encoder: the backbone; heads: the class and mask embeddings (what RbA fine-tunes); decoder: the rest
        (pixel decoder, transformer decoder, queries)."""
        encoder = list(self.hf.model.pixel_level_module.encoder.parameters())
        heads = list(self.hf.class_predictor.parameters()) + list(self._mask_embedder().parameters())
        taken = {id(p) for p in encoder + heads}
        return {"encoder": encoder, "decoder": [p for p in self.parameters() if id(p) not in taken], "heads": heads}

    def criterion(self) -> nn.Module:
        from hazardseg.losses.base import CompositeLoss
        from hazardseg.losses.mask_classification import MaskClassificationLoss

        return CompositeLoss({"mask2former": MaskClassificationLoss(**self.criterion_kwargs)})

    def adapt_init_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """``init_from`` a model without a negative class: its classifier gains the negative row (index K,
        freshly initialised), the K known rows and the "no object" row are kept."""
        key_w, key_b = "hf.class_predictor.weight", "hf.class_predictor.bias"
        own = self.hf.class_predictor
        if self.negative_class and key_w in state and state[key_w].shape[0] == own.weight.shape[0] - 1:
            k = self.num_classes
            state = dict(state)
            for key, fresh in ((key_w, own.weight), (key_b, own.bias)):
                old = state[key]
                state[key] = torch.cat([old[:k], fresh.detach()[k:k + 1].to(old), old[k:]], dim=0)
        return state

    def forward(self, image: Tensor) -> SegmentationOutput:
        size = tuple(image.shape[-2:])
        padded = pad_to_multiple(image, self.pad_multiple)
        out = self.hf(pixel_values=padded, output_auxiliary_logits=self.training and self.hf.config.use_auxiliary_loss)
        covered = (-(-size[0] // MASK_STRIDE), -(-size[1] // MASK_STRIDE))  # the mask cells the image covers
        class_logits, mask_logits = out.class_queries_logits.float(), crop(out.masks_queries_logits, covered).float()
        result: SegmentationOutput = {
            "logits": semantic_scores(class_logits, mask_logits, size, self.num_classes),
            "features": crop(out.pixel_decoder_last_hidden_state, covered),
            "feature_stride": MASK_STRIDE,
            "class_logits": class_logits,
            "mask_logits": mask_logits,
        }
        if self.negative_class:
            result["negative_class"] = self.num_classes
        if self.training and out.auxiliary_logits is not None:
            result["query_aux"] = [{"class_logits": aux["class_queries_logits"].float(),
                                    "mask_logits": crop(aux["masks_queries_logits"], covered).float()} for aux in out.auxiliary_logits]
        return result

    def _mask_embedder(self) -> nn.Module:
        return self.hf.model.transformer_module.decoder.mask_predictor.mask_embedder


def _build(config: Mapping[str, Any], num_labels: int) -> nn.Module:
    Mask2FormerConfig, Mask2FormerForUniversalSegmentation = import_transformers()
    kwargs = _plain(config)  # transformers' configs validate types strictly: plain lists, not OmegaConf's
    backbone = kwargs.get("backbone_config")
    if isinstance(backbone, Mapping):
        backbone = dict(backbone)
        if "model_type" not in backbone:
            raise ConfigError("model.config.backbone_config: needs a model_type (timm_backbone or swin)")
        if backbone["model_type"] == "timm_backbone":
            # Random init unless asked: the YAML never downloads weights behind the user's back.
            backbone.setdefault("use_pretrained_backbone", False)
        kwargs["backbone_config"] = backbone
    kwargs.setdefault("use_pretrained_backbone", False)
    try:
        with _quiet_transformers():
            hf_config = Mask2FormerConfig(num_labels=num_labels, **kwargs)
            return Mask2FormerForUniversalSegmentation(hf_config)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"model.config: transformers cannot build Mask2Former from it ({str(err).splitlines()[0]}). "
                          f"Fix: correct model.config.* (transformers.Mask2FormerConfig arguments)") from None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _load_pretrained(pretrained: str, num_labels: int, negative_class: bool = False) -> nn.Module:
    """``from_pretrained`` from a local folder, the hub cache, or the hub; offline = one line with the fixes."""
    _, Mask2FormerForUniversalSegmentation = import_transformers()
    local = os.path.isdir(os.path.expanduser(pretrained))
    if not local and (pretrained.startswith((".", "~", "/")) or pretrained.count("/") > 1):  # a path, not an org/name id
        raise ConfigError(f"model.pretrained={pretrained}: no such folder. Fix: give a folder written by save_pretrained "
                          f"(config.json + model.safetensors) or a hub id")
    source = os.path.expanduser(pretrained) if local else pretrained
    with _quiet_transformers():
        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(source, local_files_only=True)
        except OSError:
            if local or os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
                raise ConfigError(_offline_message(pretrained, local)) from None
            model = Mask2FormerForUniversalSegmentation.from_pretrained(source)
    if model.config.num_labels != num_labels:
        raise ConfigError(f"model.pretrained={pretrained}: it predicts {model.config.num_labels} classes, but the data has "
                          f"{num_labels} (data.num_classes{' + the negative class' if negative_class else ''}). Fix: pretrained "
                          f"weights of a model trained on the same label set (e.g. Cityscapes' 19 for data=cityscapes), or "
                          f"model.pretrained=null")
    return model


def _offline_message(pretrained: str, local: bool) -> str:
    if local:
        return (f"model.pretrained={pretrained}: the folder has no loadable Mask2Former (config.json + model.safetensors "
                f"from save_pretrained). Fix: point it at such a folder")
    from huggingface_hub import constants

    return (f"model.pretrained={pretrained}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {HUB_HOST} is "
            f"unreachable. Fix: on a connected machine run `python -c \"from transformers import "
            f"Mask2FormerForUniversalSegmentation as M; M.from_pretrained('{pretrained}').save_pretrained('m2f')\"`, copy "
            f"the folder here and pass model.pretrained=/path/to/m2f")


class _quiet_transformers:
    """transformers warns that a timm backbone is 'not a supported model' for Mask2Former: it is (transformers
    builds and runs it through its TimmBackbone); the warning would greet every run, so it is silenced here."""

    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        self.hf_level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.hf_level)
        self.logger.setLevel(self.level)
