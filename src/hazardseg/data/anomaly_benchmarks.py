"""Test-only anomaly segmentation benchmarks, read from the folders exactly as their releases unpack.

Every benchmark is mapped to one label convention: **0 normal, 1 anomaly, 255 void** (``ANOMALY_INDEX = 1``,
``ignore_index = 255``). The frame lists, label mappings and subsets follow the SegmentMeIfYouCan benchmark code
(Chan et al., NeurIPS 2021 D&B; ``SegmentMeIfYouCan/road-anomaly-benchmark``, commit 1c7804e, files
``road_anomaly_benchmark/datasets/tracks.py`` and ``tracks_extra.py``):

================  ======================================  =====================================================
data option       ``data.root``                           frames / labels / raw label mapping
================  ======================================  =====================================================
smiyc_anomaly     ``dataset_AnomalyTrack``                ``images/{fid}.jpg``, ``labels_masks/{fid}_labels_semantic.png``;
                                                          0/1/255 as is (RoadAnomaly21)
smiyc_obstacle    ``dataset_ObstacleTrack``               ``images/{fid}.webp``, same label files (RoadObstacle21);
                                                          scene = fid before the first ``_``
lost_and_found    LostAndFound (``leftImg8bit/``,         ``leftImg8bit/{split}/<scene>/{fid}_leftImg8bit.png``,
                  ``gtCoarse/``)                          ``gtCoarse/{split}/<scene>/{fid}_gtCoarse_labelIds.png``;
                                                          labelIds 0 -> void, 1 (free space) -> normal,
                                                          2..200 (obstacles) -> anomaly, others -> void
fishyscapes_laf   Fishyscapes L&F labels (``labels/val``)  ``labels/val/{fid}_fishy-labels.png`` (0/1/255 as is);
                  + ``data.laf_root`` (LostAndFound)      images from LostAndFound train or test
road_anomaly      RoadAnomaly (Lis et al. 2019)           ``frame_list.json``, ``frames/{name}``,
                                                          ``frames/{stem}.labels/labels_semantic.png``; 2 -> anomaly,
                                                          every other value -> normal (no void)
================  ======================================  =====================================================

There is no fit split: ``setup('fit')`` and the train/val/fit loaders raise a ConfigError. ``test_dataloader()``
yields ``{"image": float (B,3,H,W) normalised, "mask": int64 (B,h,w) at the label's native size, "name": [fid],
"group": [benchmark dataset name of the submission folder], "has_label": bool (B,)}``. Images are resized to
``data.image_size`` when it is set and kept at native size otherwise; the mask is never resized (score maps are
upsampled to it, as the benchmark does). Frames without a label file (the private test splits) get an all-void
mask and ``has_label = False``. Batches hold frames of one size: with ``batch_size > 1`` frames are grouped by
(image size, label size), read from the file headers.
"""

from __future__ import annotations

import json
import re
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

from hazardseg.data.base import (
    SegDataLoader,
    SegmentationDataModule,
    SegmentationDataset,
    check_values,
    load_index_mask,
    load_rgb,
    skip_or_raise,
)
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, parse_image_size
from hazardseg.errors import ConfigError, DataError

NORMAL, ANOMALY, VOID = 0, 1, 255
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


class SmiycDataset(AnomalyBenchmarkDataset):
    """SMIYC label masks: 0 not anomaly, 1 anomaly / obstacle, 255 void (used as they are)."""

    mask_hint = " (SMIYC labels are labels_masks/<fid>_labels_semantic.png with values 0, 1, 255)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_label_values(raw, (NORMAL, ANOMALY, VOID), path, "the SMIYC label values 0, 1, 255")
        return raw.astype(np.int64)


class LostAndFoundDataset(AnomalyBenchmarkDataset):
    """LostAndFound gtCoarse labelIds mapped as SMIYC's ``LAF_CLASSES``: 0 void, 1 road -> normal,
    2..200 obstacles -> anomaly; any other value stays void (the benchmark starts from an all-255 label)."""

    mask_hint = " (use gtCoarse/<split>/<scene>/<fid>_gtCoarse_labelIds.png, not the color or instanceIds files)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        raw = raw.astype(np.int64)
        out = np.full(raw.shape, VOID, np.int64)
        out[raw == 1] = NORMAL
        out[(raw >= 2) & (raw <= 200)] = ANOMALY
        return out


class FishyscapesDataset(SmiycDataset):
    mask_hint = " (Fishyscapes L&F labels are labels/val/<fid>_fishy-labels.png with values 0, 1, 255)"


class RoadAnomalyDataset(AnomalyBenchmarkDataset):
    """RoadAnomaly (Lis et al., ICCV 2019) labels_semantic.png: 2 = anomaly -> 1; 0 and 1 -> normal; no void."""

    mask_hint = " (RoadAnomaly labels are frames/<name>.labels/labels_semantic.png)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_label_values(raw, (0, 1, 2), path, "the RoadAnomaly label values 0, 1, 2")
        return (raw == 2).astype(np.int64)


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
class AnomalyBenchmarkDataModule(SegmentationDataModule):
    """Common base of the test-only benchmarks. Contract for evaluation code:

    * ``ANOMALY_INDEX = 1``, ``ignore_index = 255``, ``num_classes = None`` and ``class_names = []`` (the labels
      carry no semantic classes: no mIoU), ``semantic_labels = False``, ``test_only = True``;
    * ``TRACK`` (``"anomaly"`` or ``"obstacle"``): which SMIYC component-size filter applies
      (:data:`hazardseg.metrics.smiyc.COMPONENT_FILTERS`);
    * ``test_dataloader()`` (also ``predict_dataloader()``): see the module docstring for the batch keys.
    """

    NUM_CLASSES = None
    CLASS_NAMES = ()
    DEFAULT_IGNORE_INDEX = VOID
    ANOMALY_INDEX = ANOMALY
    VOID_VALUE = VOID
    DEFAULT_BATCH_SIZE = 1
    TRACK: ClassVar[str] = "anomaly"
    SUBSETS: ClassVar[tuple[str, ...]] = ("all",)
    DOWNLOAD_HINT: ClassVar[str] = ""
    semantic_labels: ClassVar[bool] = False
    test_only: ClassVar[bool] = True

    def __init__(self, subset: str | None = None, image_size: Sequence[int] | None = None, **common: Any):
        common.pop("augment", None)  # no training transforms for test-only data
        super().__init__(image_size=image_size, **common)
        # the base parses image_size with a default; here null means "native size"
        self.image_size = None if image_size in (None, "null") else parse_image_size(image_size)
        self.eval_transform = build_benchmark_transform(self.image_size)
        self.train_transform = None
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

    dataset_class: ClassVar[type[AnomalyBenchmarkDataset]] = AnomalyBenchmarkDataset

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

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate"):
            raise self.refuse("training or validation split (setup('fit'))")
        self.check_root()
        self._get("test")

    def build_dataset(self, split: str) -> AnomalyBenchmarkDataset:
        if split != "test":
            raise self.refuse(f"{split} split")
        frames, missing = self.build_frames()
        if not frames:
            raise DataError(
                f"{self.name} (data.subset={self.subset}): no frames found in data.root={self.root}; {self.DOWNLOAD_HINT}"
            )
        ds = self.dataset_class(frames, None, self.skip_bad_samples)
        if missing:
            example = next(iter(missing.values()))
            warnings.warn(f"{self.name}: skipped {len(missing)} listed frames, e.g. {example}", stacklevel=2)
            ds.bad_samples.update(missing)
        return ds

    def dataset(self, split: str = "test", train_transform: bool = False) -> AnomalyBenchmarkDataset:
        if split != "test" or train_transform:
            raise self.refuse(f"{split} split")
        return self._get("test").with_transform(self.eval_transform)  # type: ignore[return-value]

    @property
    def frames(self) -> list[Frame]:
        return self._get("test").frames

    def train_dataloader(self):
        raise self.refuse("training split")

    def val_dataloader(self):
        raise self.refuse("validation split")

    def fit_dataloader(self):
        raise self.refuse(
            "training split to fit scorer statistics on (fit them on the checkpoint's own training data)"
        )

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

    def predict_dataloader(self) -> SegDataLoader:
        return self.test_dataloader()

    def __repr__(self) -> str:
        size = "native" if self.image_size is None else list(self.image_size)
        return f"{type(self).__name__}(root={self.root}, subset={self.subset}, image_size={size}, batch_size={self.batch_size})"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


# ------------------------------------------------------------------------------------------------
# SegmentMeIfYouCan: RoadAnomaly21 (AnomalyTrack) and RoadObstacle21 (ObstacleTrack)
# ------------------------------------------------------------------------------------------------
SMIYC_HINT = (
    "download {zip} from https://segmentmeifyoucan.com/datasets, unzip it and set data.root=/path/to/{folder} "
    "(the folder that holds images/ and labels_masks/; or export {env})"
)


class _SmiycDataModule(AnomalyBenchmarkDataModule):
    FOLDER: ClassVar[str] = ""
    GROUP: ClassVar[str] = ""
    dataset_class = SmiycDataset

    def check_root(self) -> None:
        super().check_root()
        if not (self.root / "images").is_dir():
            nested = sorted(p.parent for p in self.root.glob("*/images") if p.is_dir())
            extra = f" (found one in {nested[0]}: set data.root={nested[0]})" if nested else ""
            raise DataError(f"data.root={self.root} has no images/ folder{extra}; {self.DOWNLOAD_HINT}")

    def keep(self, fid: str) -> bool:
        raise NotImplementedError

    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        frames = []
        for image in _image_files(self.root / "images"):
            fid = image.stem
            if not self.keep(fid):
                continue
            label = self.root / "labels_masks" / f"{fid}_labels_semantic.png"
            frames.append(Frame(image, label if label.is_file() else None, fid, self.GROUP))
        return frames, {}


class SmiycAnomalyDataModule(_SmiycDataModule):
    """RoadAnomaly21 (SMIYC AnomalyTrack): 100 test frames (labels private) + 10 ``validation0000..9``;
    2048x1024 and 1280x720 frames mixed. Subsets as the benchmark's ``AnomalyTrack-all`` / ``-validation`` /
    ``-test``. Submission files go to ``AnomalyTrack-all`` (the benchmark reads every subset from there)."""

    name = "smiyc_anomaly"
    TRACK = "anomaly"
    FOLDER, GROUP = "dataset_AnomalyTrack", "AnomalyTrack-all"
    SUBSETS = ("all", "validation", "test")
    DOWNLOAD_HINT = SMIYC_HINT.format(zip="dataset_AnomalyTrack.zip", folder="dataset_AnomalyTrack", env="SMIYC_ANOMALY_ROOT")

    def keep(self, fid: str) -> bool:
        is_validation = fid.startswith("validation")
        return self.subset == "all" or (self.subset == "validation") == is_validation


# ObstacleTrack scenes and subsets (tracks.py, DatasetObstacleTrack)
OBSTACLE_SCENES = frozenset({
    "curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway", "paving", "darkasphalt", "darkasphalt2",
    "snowstorm1", "snowstorm2", "driveway", "validation",
})  # fmt: skip
OBSTACLE_SUBSETS: dict[str, frozenset[str]] = {
    "all": OBSTACLE_SCENES,
    "test": OBSTACLE_SCENES - {"snowstorm1", "snowstorm2", "driveway", "validation"},  # 327 frames: the leaderboard
    "validation": frozenset({"validation"}),  # 30 frames after the exclusions below
    "noNight": OBSTACLE_SCENES - {"driveway"},
    "night": frozenset({"driveway"}),
    "snowstorm": frozenset({"snowstorm1", "snowstorm2"}),
}
# ObstacleTrack-validation drops these fid prefixes (tracks.py, exclude_prefix)
OBSTACLE_VALIDATION_EXCLUDED = ("validation_19",) + tuple(f"validation_2{i}" for i in range(1, 10))


class SmiycObstacleDataModule(_SmiycDataModule):
    """RoadObstacle21 (SMIYC ObstacleTrack), 1920x1080 WebP. ``subset`` as the benchmark's ObstacleTrack
    configs (``all``, ``test`` = the 327 leaderboard frames, ``validation`` = 30 frames, ``noNight``, ``night``,
    ``snowstorm``); frames of an unknown scene are left out, as the benchmark does. Submission files go to
    ``ObstacleTrack-all``."""

    name = "smiyc_obstacle"
    TRACK = "obstacle"
    FOLDER, GROUP = "dataset_ObstacleTrack", "ObstacleTrack-all"
    SUBSETS = tuple(OBSTACLE_SUBSETS)
    DOWNLOAD_HINT = SMIYC_HINT.format(zip="dataset_ObstacleTrack.zip", folder="dataset_ObstacleTrack", env="SMIYC_OBSTACLE_ROOT")

    def keep(self, fid: str) -> bool:
        if fid.split("_")[0] not in OBSTACLE_SUBSETS[self.subset]:
            return False
        return not (self.subset == "validation" and fid.startswith(OBSTACLE_VALIDATION_EXCLUDED))

    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        frames, missing = super().build_frames()
        unknown = [p.stem for p in _image_files(self.root / "images") if p.stem.split("_")[0] not in OBSTACLE_SCENES]
        if unknown:
            warnings.warn(
                f"{self.name}: {len(unknown)} images belong to no ObstacleTrack scene and are left out, as the benchmark "
                f"does (e.g. {unknown[0]}; scene = fid before the first '_')",
                stacklevel=2,
            )
        return frames, missing


# ------------------------------------------------------------------------------------------------
# LostAndFound (Pinggera et al., IROS 2016) and SMIYC's LostAndFound-testNoKnown
# ------------------------------------------------------------------------------------------------
LAF_HINT = (
    "download leftImg8bit.zip and gtCoarse.zip from https://www.6d-vision.com/lostandfounddataset, unzip both into "
    "one folder and set data.root=/path/to/folder containing leftImg8bit/ and gtCoarse/ (or export LAF_ROOT)"
)
# Positions (in the fid-sorted split) of frames whose labels are empty ("invalid frames are those where
# np.count_nonzero(labels_source) is 0"), tracks.py DatasetLostAndFound configs.
LAF_INVALID_TEST_POSITIONS = (17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793)
LAF_INVALID_TRAIN_POSITIONS = (44, 67, 88, 109, 131, 614)
# LostAndFound-testNoKnown also drops known object classes: children and bicycles (fid prefixes)
LAF_KNOWN_OBJECT_PREFIXES = (
    "15_Rechbergstr_Deckenpfronn",  # children
    "01_Hanns_Klemm_Str_45_000006",  # bicycle
    "01_Hanns_Klemm_Str_45_000007",  # bicycle
    "10_Schlossberg_9_000004",  # bicycle
)
LAF_SPLIT_LENGTH = {"test": 1203, "train": 1036}
# subset -> (split folder, invalid positions or None, excluded prefixes, benchmark name)
LAF_SUBSETS: dict[str, tuple[str, tuple[int, ...] | None, tuple[str, ...], str]] = {
    "test_no_known": ("test", LAF_INVALID_TEST_POSITIONS, LAF_KNOWN_OBJECT_PREFIXES, "LostAndFound-testNoKnown"),  # 1043
    "test_valid": ("test", LAF_INVALID_TEST_POSITIONS, (), "LostAndFound-testValid"),  # 1186
    "test": ("test", None, (), "LostAndFound-test"),  # 1203
    "train_valid": ("train", LAF_INVALID_TRAIN_POSITIONS, (), "LostAndFound-trainValid"),  # 1030
    "train": ("train", None, (), "LostAndFound-train"),  # 1036
}
LAF_SUFFIX = "_leftImg8bit"


def laf_images(root: Path, split: str) -> list[tuple[str, Path]]:
    """(fid, image) of one LostAndFound split, sorted by fid; PNG, else WebP, else JPEG (as the benchmark)."""
    folder = root / "leftImg8bit" / split
    for ext in (".png", ".webp", ".jpg"):
        files = list(folder.glob(f"*/*{LAF_SUFFIX}{ext}"))
        if files:
            return sorted((p.name[: -len(LAF_SUFFIX + ext)], p) for p in files)
    return []


def laf_label(root: Path, split: str, image: Path, fid: str) -> Path:
    return root / "gtCoarse" / split / image.parent.name / f"{fid}_gtCoarse_labelIds.png"


class LostAndFoundDataModule(AnomalyBenchmarkDataModule):
    """LostAndFound, scored as SMIYC's obstacle track. ``subset=test_no_known`` (default) is SMIYC's
    ``LostAndFound-testNoKnown`` (1043 frames): the 1203-frame test split without the 17 frames with empty labels
    (removed by their position in the fid-sorted split, as the benchmark does, so the whole split must be present)
    and without the known-object sequences (children, bicycles). Submission files go to ``LostAndFound-test`` /
    ``LostAndFound-train``."""

    name = "lost_and_found"
    TRACK = "obstacle"
    SUBSETS = tuple(LAF_SUBSETS)
    DOWNLOAD_HINT = LAF_HINT
    dataset_class = LostAndFoundDataset

    def check_root(self) -> None:
        super().check_root()
        if not (self.root / "leftImg8bit").is_dir():
            nested = sorted(p.parent for p in self.root.glob("*/leftImg8bit") if p.is_dir())
            extra = f" (found one in {nested[0]}: set data.root={nested[0]})" if nested else ""
            raise DataError(f"data.root={self.root} has no leftImg8bit/ folder{extra}; {LAF_HINT}")

    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        split, invalid, prefixes, bench_name = LAF_SUBSETS[self.subset]
        found = laf_images(self.root, split)
        if invalid is not None and found and len(found) != LAF_SPLIT_LENGTH[split]:
            raise DataError(
                f"data.subset={self.subset} ({bench_name}) removes frames by their position in the full {split} split "
                f"({LAF_SPLIT_LENGTH[split]} frames) but {self.root / 'leftImg8bit' / split} has {len(found)}; "
                f"extract the whole split or use data.subset={split}"
            )
        if invalid is not None:
            drop = set(invalid)
            found = [f for i, f in enumerate(found) if i not in drop]
        found = [(fid, image) for fid, image in found if not fid.startswith(prefixes)]
        frames, missing = [], {}
        for fid, image in found:
            label = laf_label(self.root, split, image, fid)
            if not label.is_file():
                msg = f"{image}: label {label} not found; extract gtCoarse.zip into data.root"
                skip_or_raise(msg, str(image), self.skip_bad_samples, missing)
                continue
            frames.append(Frame(image, label, fid, f"LostAndFound-{split}"))
        return frames, missing


# ------------------------------------------------------------------------------------------------
# Fishyscapes Lost & Found (Blum et al., IJCV 2021)
# ------------------------------------------------------------------------------------------------
FISHY_HINT = (
    "download the Fishyscapes Lost & Found validation labels (https://fishyscapes.com), place them as "
    "labels/val/<fid>_fishy-labels.png and set data.root to that folder (or export FISHYSCAPES_LAF_ROOT); the images "
    "come from LostAndFound: set data.laf_root (or export LAF_ROOT)"
)
# FishyLAFAnomaly-val: the 100 LostAndFound frames Fishyscapes relabelled (tracks_extra.py FRAME_IDS_SETS)
FISHY_LAF_VAL = tuple(
    [f"01_Hanns_Klemm_Str_45_{s}" for s in (
        "000000_000080", "000000_000140", "000000_000200", "000000_000230", "000000_000260", "000001_000060",
        "000001_000120", "000001_000180", "000001_000210", "000001_000240", "000002_000070", "000002_000130",
        "000002_000190", "000002_000220", "000003_000030", "000003_000090", "000003_000150", "000003_000180",
        "000003_000210", "000004_000120", "000004_000180", "000004_000210", "000005_000080", "000005_000140",
        "000005_000200", "000005_000230", "000008_000060", "000008_000120", "000008_000180", "000008_000240",
        "000009_000090", "000009_000150", "000009_000210", "000010_000050", "000010_000110", "000010_000170",
        "000010_000200", "000011_000050", "000011_000110", "000011_000170", "000011_000200", "000011_000230",
        "000011_000260", "000012_000160", "000012_000220", "000012_000250", "000012_000280")]
    + [f"04_Maurener_Weg_8_{s}" for s in (
        "000000_000030", "000000_000090", "000000_000150", "000000_000180", "000001_000030", "000001_000090",
        "000001_000150", "000001_000180", "000001_000210", "000002_000060", "000002_000120", "000002_000150",
        "000003_000030", "000003_000090", "000003_000120", "000004_000020", "000004_000080", "000004_000140",
        "000004_000170", "000004_000200", "000005_000050", "000005_000110", "000005_000170", "000005_000200",
        "000006_000040", "000006_000100", "000006_000130", "000007_000020", "000007_000080", "000007_000140",
        "000007_000170", "000008_000040", "000008_000100", "000008_000130", "000008_000160", "000008_000190")]
    + [f"13_Elly_Beinhorn_Str_{s}" for s in (
        "000000_000050", "000000_000110", "000000_000170", "000000_000230", "000000_000260", "000000_000290",
        "000001_000080", "000001_000140", "000001_000200", "000001_000230", "000002_000030", "000002_000090",
        "000002_000120", "000003_000080", "000003_000140", "000003_000200", "000003_000260")]
)  # fmt: skip
assert len(FISHY_LAF_VAL) == 100
FISHY_SUFFIX = "_fishy-labels.png"
_LAF_FID = re.compile(r"^(\d{2}_.*)_\d{6}_\d{6}$")


class FishyscapesLafDataModule(AnomalyBenchmarkDataModule):
    """Fishyscapes Lost & Found validation (SMIYC ``FishyLAFAnomaly-val``, scored with the anomaly-track
    component filter). ``subset=val`` is the benchmark's fixed 100-frame list; ``subset=all`` takes every label
    file found. Images are read from LostAndFound (``data.laf_root``); the submission file of a frame goes to
    ``LostAndFound-train`` or ``LostAndFound-test``, whichever split holds its image (the benchmark reads it
    from there)."""

    name = "fishyscapes_laf"
    TRACK = "anomaly"
    SUBSETS = ("val", "all")
    DOWNLOAD_HINT = FISHY_HINT
    dataset_class = FishyscapesDataset

    def __init__(self, laf_root: str | Path | None = None, **common: Any):
        super().__init__(**common)
        self.laf_root = None if laf_root in (None, "", "null") else Path(str(laf_root)).expanduser()

    def check_root(self) -> None:
        super().check_root()
        if not (self.root / "labels" / "val").is_dir():
            raise DataError(f"data.root={self.root} has no labels/val/ folder; {FISHY_HINT}")
        if self.laf_root is None or not (self.laf_root / "leftImg8bit").is_dir():
            hint = LAF_HINT.replace("data.root", "data.laf_root")
            raise DataError(f"data.laf_root={self.laf_root}: no LostAndFound leftImg8bit/ folder there; {hint}")

    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        label_dir = self.root / "labels" / "val"
        if self.subset == "val":
            fids = list(FISHY_LAF_VAL)
        else:
            fids = sorted(p.name[: -len(FISHY_SUFFIX)] for p in label_dir.glob(f"*{FISHY_SUFFIX}"))
        frames, missing = [], {}
        for fid in fids:
            label = label_dir / f"{fid}{FISHY_SUFFIX}"
            image = self._laf_image(fid)
            problem = None
            if not label.is_file():
                problem = f"{label}: label of Fishyscapes frame {fid} not found; {FISHY_HINT}"
            elif image is None:
                problem = (f"{fid}: image not found in {self.laf_root}/leftImg8bit/{{train,test}}/<scene>/; "
                           f"set data.laf_root to the LostAndFound folder")
            if problem:
                skip_or_raise(problem, str(label), self.skip_bad_samples, missing)
                continue
            frames.append(Frame(image, label, fid, f"LostAndFound-{image.parent.parent.name}"))
        return frames, missing

    def _laf_image(self, fid: str) -> Path | None:
        match = _LAF_FID.match(fid)
        if match is None:
            return None
        for split in ("train", "test"):
            for ext in (".png", ".webp", ".jpg"):
                path = self.laf_root / "leftImg8bit" / split / match.group(1) / f"{fid}{LAF_SUFFIX}{ext}"
                if path.is_file():
                    return path
        return None


# ------------------------------------------------------------------------------------------------
# RoadAnomaly (Lis et al., ICCV 2019)
# ------------------------------------------------------------------------------------------------
ROAD_ANOMALY_HINT = (
    "download RoadAnomaly.zip from https://www.epfl.ch/labs/cvlab/data/road-anomaly/, unzip it and set "
    "data.root=/path/to/RoadAnomaly (the folder with frame_list.json and frames/; or export ROAD_ANOMALY_ROOT)"
)


class RoadAnomalyDataModule(AnomalyBenchmarkDataModule):
    """RoadAnomaly (60 frames, mostly 1280x720): ``frame_list.json`` lists the image files of ``frames/``;
    labels ``frames/<stem>.labels/labels_semantic.png`` with 2 = anomaly (every other value normal, no void).
    Not part of SMIYC: scored with the SMIYC formulas and the anomaly-track component filter; submission-format
    files go to ``RoadAnomaly``."""

    name = "road_anomaly"
    TRACK = "anomaly"
    DOWNLOAD_HINT = ROAD_ANOMALY_HINT
    dataset_class = RoadAnomalyDataset

    def build_frames(self) -> tuple[list[Frame], dict[str, str]]:
        index = self.root / "frame_list.json"
        try:
            names = json.loads(index.read_text())
        except FileNotFoundError:
            raise DataError(f"{index} not found; {ROAD_ANOMALY_HINT}") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{index}: not valid JSON ({e}); re-extract RoadAnomaly.zip") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{index}: expected a JSON list of image file names, e.g. [\"animals01_....jpg\"]")
        frames, missing = [], {}
        for entry in names:
            image = self._image(Path(entry))
            stem = Path(entry).stem
            label = self.root / "frames" / f"{stem}.labels" / "labels_semantic.png"
            problem = None
            if image is None:
                problem = f"{self.root / 'frames' / entry}: listed in {index} but missing; re-extract RoadAnomaly.zip"
            elif not label.is_file():
                problem = f"{label}: label of {entry} not found; re-extract RoadAnomaly.zip"
            if problem:
                skip_or_raise(problem, str(self.root / "frames" / entry), self.skip_bad_samples, missing)
                continue
            frames.append(Frame(image, label, stem, "RoadAnomaly"))
        return frames, missing

    def _image(self, entry: Path) -> Path | None:
        """The listed file, or the same stem in another format (the release exists as JPEG and as WebP)."""
        for candidate in [entry.name] + [entry.stem + ext for ext in IMAGE_EXTS]:
            path = self.root / "frames" / candidate
            if path.is_file():
                return path
        return None


BENCHMARK_DATAMODULES: dict[str, type[AnomalyBenchmarkDataModule]] = {
    cls.name: cls
    for cls in (SmiycAnomalyDataModule, SmiycObstacleDataModule, LostAndFoundDataModule, FishyscapesLafDataModule,
                RoadAnomalyDataModule)
}
