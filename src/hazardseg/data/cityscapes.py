"""Cityscapes (gtFine): 19 train ids, 255 = ignore.

Layout::

    root/leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png       (label_type: labelIds, default)
    root/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelTrainIds.png  (label_type: labelTrainIds)

labelIds are mapped with the official table (cityscapesScripts ``helpers/labels.py``). The public test
split has no labels, so ``test_split: val`` (default) evaluates on val.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.data.base import SegmentationDataModule
from hazardseg.data.dataset import SegmentationDataset
from hazardseg.data.readers import Item, check_values, skip_or_raise
from hazardseg.errors import ConfigError, DataError

# (name, labelId, trainId) from cityscapesScripts/cityscapesscripts/helpers/labels.py
LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15),
    ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]  # fmt: skip  (license plate, id -1, never occurs in labelIds PNGs)
MAX_LABEL_ID = 33
LABEL_TO_TRAIN = np.full(256, 255, np.int64)
for _name, _lid, _tid in LABELS:
    LABEL_TO_TRAIN[_lid] = _tid
CLASS_NAMES = tuple(n for n, _, t in sorted(LABELS, key=lambda r: r[2]) if t != 255)
NUM_CLASSES = 19
IGNORE = 255
assert len(CLASS_NAMES) == NUM_CLASSES


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return LABEL_TO_TRAIN[label_ids]


class CityscapesDataset(SegmentationDataset):
    mask_hint = " (for Cityscapes use *_gtFine_labelIds.png or *_gtFine_labelTrainIds.png, not *_gtFine_color.png)"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        label_type: str = "labelIds",
        skip_bad_samples: bool = False,
    ):
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ConfigError(f"data.label_type={label_type!r}: expected labelIds or labelTrainIds")
        self.root, self.split, self.label_type = Path(root), split, label_type
        img_dir = self.root / "leftImg8bit" / split
        items = []
        missing: dict[str, str] = {}
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            seg = self.root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_{label_type}.png"
            if not seg.is_file():
                msg = f"{img}: annotation {seg} not found; extract gtFine_trainvaltest.zip into data.root (or set data.label_type)"
                skip_or_raise(msg, str(img), skip_bad_samples, missing)
                continue
            items.append(Item(img, seg, img.relative_to(self.root).as_posix()))
        if not items:
            raise DataError(
                f"Cityscapes {split} split is empty: no */*_leftImg8bit.png in {img_dir}; "
                f"set data.root=/path/to/folder containing leftImg8bit/ and gtFine/"
            )
        super().__init__(items, transform, skip_bad_samples)
        self.bad_samples.update(missing)

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.label_type == "labelIds":
            if int(raw.max()) > MAX_LABEL_ID:
                check_values(raw, np.arange(0, MAX_LABEL_ID + 1), path, "Cityscapes labelIds 0..33")
            return label_ids_to_train_ids(raw.astype(np.int64))
        allowed = np.append(np.arange(NUM_CLASSES), IGNORE)
        check_values(raw, allowed, path, "Cityscapes trainIds 0..18 and 255")
        return raw.astype(np.int64)


class CityscapesDataModule(SegmentationDataModule):
    name = "cityscapes"
    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DEFAULT_IGNORE_INDEX = IGNORE
    VOID_VALUE = IGNORE

    DEFAULT_IMAGE_SIZE = (512, 1024)
    DEFAULT_BATCH_SIZE = 8

    def __init__(
        self,
        label_type: str = "labelIds",
        test_split: str = "val",
        **common: Any,
    ):
        super().__init__(**common)
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ConfigError(f"data.label_type={label_type!r}: expected labelIds or labelTrainIds")
        if test_split not in ("val", "test"):
            raise ConfigError(f"data.test_split={test_split!r}: expected val (Cityscapes test labels are not public) or test")
        self.label_type, self.test_split = label_type, test_split

    def check_root(self) -> None:
        if self.root is None or not self.root.is_dir():
            raise DataError(
                f"data.root={self.root}: Cityscapes folder not found; download leftImg8bit_trainvaltest.zip and "
                f"gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com and set data.root=/path/to/folder "
                f"containing leftImg8bit/ and gtFine/"
            )

    def build_dataset(self, split: str) -> CityscapesDataset:
        real = self.test_split if split == "test" else split
        return CityscapesDataset(self.root, real, None, self.label_type, self.skip_bad_samples)
