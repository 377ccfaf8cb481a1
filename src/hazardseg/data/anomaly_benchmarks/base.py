"""Shared part of the test-only anomaly benchmarks: frames, their dataset, batching by size, and the
datamodule every benchmark family builds on (a sibling of the training datamodule: a test split only).
See :mod:`hazardseg.data.anomaly_benchmarks` for the layouts and the label convention."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from hazardseg.data.base import DataModuleBase
from hazardseg.data.dataset import SegDataLoader, SegmentationDataset
from hazardseg.data.labels import IGNORE_LABEL
from hazardseg.data.readers import check_values, load_index_mask, load_rgb
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, parse_image_size
from hazardseg.errors import ConfigError, DataError

# The one label convention of every benchmark (mapped from each release's own values by its reader).
NORMAL, ANOMALY, VOID = 0, 1, IGNORE_LABEL
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
SOURCE = "SegmentMeIfYouCan/road-anomaly-benchmark@1c7804e, road_anomaly_benchmark/datasets"


@dataclass(frozen=True)
class Frame:
    """One benchmark frame. ``mask`` is None when the label is not public (private test split)."""

    image: Path
    mask: Path | None
    name: str  # the benchmark's frame id (fid): the submission file is <group>/<name>.hdf5
    group: str  # benchmark dataset name whose folder the submission file goes to, e.g. AnomalyTrack-all


# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------
class ImageOnly:
    """Apply an image transform to ``sample["image"]`` only: the mask keeps the label's native size."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "image": self.transform(sample["image"])}

    def __repr__(self) -> str:
        return f"ImageOnly({self.transform})"


def build_benchmark_transform(image_size: tuple[int, int] | None) -> ImageOnly:
    """Resize to ``image_size`` (or keep the native size when None), then float + ImageNet normalisation."""
    if image_size is not None:
        return ImageOnly(build_eval_transform(image_size))
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return ImageOnly(v2.Compose(finish))


class AnomalyBenchmarkDataset(SegmentationDataset):
    """Frames of one benchmark; subclasses map raw label values with :meth:`encode_mask`."""

    mask_hint = " (benchmark labels are single-channel PNGs)"

    def __init__(self, frames: Sequence[Frame], transform: Callable | None = None, skip_bad_samples: bool = False):
        super().__init__(frames, transform, skip_bad_samples)

    @property
    def frames(self) -> list[Frame]:
        return self.items  # type: ignore[return-value]

    def load_mask(self, index: int) -> np.ndarray:
        frame = self.items[index]
        if frame.mask is None:
            raise DataError(f"{frame.image}: this frame has no public label")
        return super().load_mask(index)

    def load_raw(self, index: int) -> dict[str, Any]:
        frame: Frame = self.items[index]  # type: ignore[assignment]
        image = load_rgb(frame.image)
        height, width = image.shape[:2]
        if frame.mask is None:
            mask = np.full((height, width), VOID, np.int64)
        else:
            raw = load_index_mask(frame.mask, self.mask_hint)
            if raw.shape != (height, width):
                raise DataError(
                    f"label {frame.mask} is {raw.shape[1]}x{raw.shape[0]} but its image {frame.image} is {width}x{height} "
                    f"(WxH); they must match: re-extract the dataset (labels are never resized)"
                )
            mask = self._encode(raw, frame.mask)
        return {
            "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
            # a plain tensor, not a tv_tensors.Mask: transforms must not resize the label
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
            "name": frame.name,
            "group": frame.group,
            "has_label": frame.mask is not None,
        }

    def frame_sizes(self) -> list[tuple[tuple[int, int], tuple[int, int] | None]]:
        """(image WxH, label WxH or None) per frame, from the file headers only (no decoding)."""
        sizes = []
        for frame in self.frames:
            sizes.append((_header_size(frame.image), None if frame.mask is None else _header_size(frame.mask)))
        return sizes


def check_label_values(raw: np.ndarray, allowed: Sequence[int], path: Path, what: str) -> None:
    """:func:`check_values` with a bincount for 8-bit labels (a 2048x1024 label: ~2 ms instead of a sort)."""
    if raw.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        if np.isin(present, allowed).all():
            return
    check_values(raw, allowed, path, what)


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # missing / not an image: the same one-line error as when loading it
        raise DataError(f"{path}: cannot read the image header ({type(e).__name__}: {e}); re-download/re-extract it") from None


# ------------------------------------------------------------------------------------------------
# Batching: frames of one size per batch
# ------------------------------------------------------------------------------------------------
def collate_frames(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack frames of equal size; different sizes in one batch raise a one-line DataError."""
    shapes = {(tuple(s["image"].shape), tuple(s["mask"].shape)) for s in samples}
    if len(shapes) > 1:
        found = ", ".join(f"image {i[1:]} / label {m}" for i, m in sorted(shapes))
        raise DataError(
            f"frames of different sizes in one batch ({found}); set data.batch_size=1 (the default for these "
            f"benchmarks) or data.image_size=[H,W] for images of one size"
        )
    batch = {
        "image": torch.stack([torch.as_tensor(s["image"]).as_subclass(torch.Tensor) for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]).long(),
        "name": [s["name"] for s in samples],
        "group": [s["group"] for s in samples],
        "has_label": torch.tensor([bool(s["has_label"]) for s in samples], dtype=torch.bool),
    }
    batch["_skipped"] = [x for s in samples for x in s.get("_skipped", ())]
    return batch


class SizeGroupedBatchSampler(Sampler[list[int]]):
    """Batches of frames that share one size key, groups in order of first appearance, frames in order."""

    def __init__(self, keys: Sequence[Any], batch_size: int):
        self.batch_size = batch_size
        groups: dict[Any, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.batches = [idx[i : i + batch_size] for idx in groups.values() for i in range(0, len(idx), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ------------------------------------------------------------------------------------------------
# Datamodule base
# ------------------------------------------------------------------------------------------------
class AnomalyBenchmarkDataModule(DataModuleBase):
    """Common base of the test-only benchmarks (a test split only). Contract for evaluation code:

    * ``labels``: no classes (no mIoU), anomaly value 1, ignore 255 (``semantic_labels = False``), ``test_only = True``;
    * ``TRACK`` (``"anomaly"`` or ``"obstacle"``): which SMIYC component-size filter applies
      (:data:`hazardseg.metrics.smiyc.COMPONENT_FILTERS`);
    * ``test_dataloader()`` (also ``predict_dataloader()``): see the package docstring for the batch keys.
    """

    NUM_CLASSES = None
    CLASS_NAMES = ()
    DEFAULT_IGNORE_INDEX = VOID
    ANOMALY_INDEX = ANOMALY
    VOID_VALUE = VOID
    DEFAULT_BATCH_SIZE = 1
    SPLITS_PROVIDED = ("test",)
    TRACK: ClassVar[str] = "anomaly"
    SUBSETS: ClassVar[tuple[str, ...]] = ("all",)
    DOWNLOAD_HINT: ClassVar[str] = ""
    LABELS_AT: ClassVar[str] = "its label files"  # where a frame's label is expected, for messages
    test_only: ClassVar[bool] = True
    dataset_class: ClassVar[type[AnomalyBenchmarkDataset]] = AnomalyBenchmarkDataset

    def __init__(self, subset: str | None = None, image_size: Sequence[int] | None = None, **common: Any):
        common.pop("augment", None)  # no training transforms for test-only data
        super().__init__(**common)
        # null means "native size": the score maps are upsampled to the labels, as the benchmark does
        self.image_size = None if image_size in (None, "null") else parse_image_size(image_size)
        self.eval_transform = build_benchmark_transform(self.image_size)
        if self.ignore_index in (NORMAL, ANOMALY):
            raise ConfigError(f"data.ignore_index={self.ignore_index} collides with the normal (0) / anomaly (1) labels; use 255")
        subset = self.SUBSETS[0] if subset is None else subset
        if subset not in self.SUBSETS:
            raise ConfigError(f"data.subset={subset!r}: expected one of {list(self.SUBSETS)}")
        self.subset = subset

    # --- to implement ---------------------------------------------------------------------------
    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        """All frames of ``self.subset`` and the unusable listed frames (file -> reason, with skip_bad_samples)."""
        raise NotImplementedError

    # --- test-only behaviour --------------------------------------------------------------------
    @classmethod
    def refuse(cls, what: str) -> ConfigError:
        """The one-line error for anything that needs a split these benchmarks do not have (``train.py`` included)."""
        return ConfigError(
            f"data={cls.name} is a test-only anomaly benchmark: it has no {what}; train on another dataset and "
            f"evaluate its checkpoint with `python eval.py ckpt_path=... data={cls.name}`"
        )

    def check_root(self) -> None:
        if self.root is None:
            raise DataError(f"data.root is not set: {self.DOWNLOAD_HINT}")
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root}: folder not found; {self.DOWNLOAD_HINT}")

    def check_unique(self, frames: Sequence[Frame]) -> None:
        """One frame per (submission folder, frame id), for every reader: a frame read twice would weigh double in
        every pooled and component metric, and its submission file would be written twice."""
        first: dict[tuple[str, str], Frame] = {}
        for frame in frames:
            other = first.setdefault((frame.group, frame.name), frame)
            if other is not frame:
                how = (f"is listed twice ({frame.image})" if other.image == frame.image
                       else f"has two images ({other.image} and {frame.image})")
                raise DataError(f"{self.name}: frame id {frame.name!r} {how}; it would be scored twice and its "
                                f"submission file overwritten. Fix: remove the duplicate from data.root={self.root}")

    def eval_transform_of(self, split: str) -> ImageOnly:
        return self.eval_transform

    def build_dataset(self, split: str) -> AnomalyBenchmarkDataset:
        frames, missing = self.build_frames()
        if not frames:
            raise DataError(
                f"{self.name} (data.subset={self.subset}): no frames found in data.root={self.root}; {self.DOWNLOAD_HINT}"
            )
        self.check_unique(frames)
        ds = self.dataset_class(frames, None, self.skip_bad_samples)
        if missing:
            example = next(iter(missing.values()))
            warnings.warn(f"{self.name}: skipped {len(missing)} listed frames, e.g. {example}", stacklevel=2)
            ds.bad_samples.update(missing)
        return ds

    def dataset(self, split: str = "test", train_transform: bool = False) -> AnomalyBenchmarkDataset:
        return super().dataset(split, train_transform)  # type: ignore[return-value]

    @property
    def frames(self) -> list[Frame]:
        return self._get("test").frames

    def test_dataloader(self) -> SegDataLoader:
        ds = self.dataset("test")
        common = dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                      persistent_workers=self.persistent_workers, collate_fn=collate_frames)
        if self.batch_size == 1:
            return SegDataLoader(ds, batch_size=1, shuffle=False, **common)
        # the mask has the label's size, or the image's when there is no label; the input is resized or native
        sizes = [(image, label or image) for image, label in ds.frame_sizes()]
        keys = [mask if self.image_size is not None else (image, mask) for image, mask in sizes]
        return SegDataLoader(ds, batch_sampler=SizeGroupedBatchSampler(keys, self.batch_size), **common)

    def __repr__(self) -> str:
        size = "native" if self.image_size is None else list(self.image_size)
        return f"{type(self).__name__}(root={self.root}, subset={self.subset}, image_size={size}, batch_size={self.batch_size})"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
