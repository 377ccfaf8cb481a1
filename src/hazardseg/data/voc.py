"""PASCAL VOC 2012 segmentation: 21 classes (background + 20), 255 = boundary/ignore.

Layout: ``root/VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png,
ImageSets/Segmentation/{train,val}.txt}`` (``root`` may also point at ``VOCdevkit`` or ``VOC2012``).
SegmentationClass PNGs are palette ('P') images: they are read by palette *index*, never converted
to RGB. No public test labels: ``test_split: val`` (default).
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

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NUM_CLASSES = 21
IGNORE = 255


def voc_palette() -> list[int]:
    """The standard VOC colour map (256 entries, flattened RGB) used by SegmentationClass PNGs."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def find_voc_root(root: Path) -> Path | None:
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    return None


class VOCDataset(SegmentationDataset):
    mask_hint = " (VOC: SegmentationClass/*.png palette images, not SegmentationObject or RGB renderings)"

    def __init__(self, voc_root: str | os.PathLike, split: str = "train", transform: Callable | None = None, skip_bad_samples: bool = False):
        self.voc_root = Path(voc_root)
        list_file = self.voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found; extract VOCtrainval_11-May-2012.tar and set data.root to the folder holding VOCdevkit/")
        items, missing = [], {}
        for name in (ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()):
            img = self.voc_root / "JPEGImages" / f"{name}.jpg"
            seg = self.voc_root / "SegmentationClass" / f"{name}.png"
            bad = next((f for f in (img, seg) if not f.is_file()), None)
            if bad is not None:
                msg = f"{bad}: listed in {list_file} but missing; re-extract the VOC tarball"
                skip_or_raise(msg, str(img), skip_bad_samples, missing)
                continue
            items.append(Item(img, seg, f"JPEGImages/{name}.jpg"))
        if not items:
            raise DataError(f"VOC {split} split is empty: {list_file} lists no usable samples")
        super().__init__(items, transform, skip_bad_samples)
        self.bad_samples.update(missing)

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if int(raw.max()) >= NUM_CLASSES:
            check_values(raw, np.append(np.arange(NUM_CLASSES), IGNORE), path, "VOC class indices 0..20 and 255")
        return raw.astype(np.int64)


class VOCDataModule(SegmentationDataModule):
    name = "voc2012"
    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DEFAULT_IGNORE_INDEX = IGNORE
    VOID_VALUE = IGNORE

    DEFAULT_IMAGE_SIZE = (320, 320)
    DEFAULT_BATCH_SIZE = 8

    def __init__(
        self,
        test_split: str = "val",
        **common: Any,
    ):
        super().__init__(**common)
        if test_split not in ("val", "test"):
            raise ConfigError(f"data.test_split={test_split!r}: expected val or test")
        self.test_split = test_split

    def check_root(self) -> None:
        if self.root is None or find_voc_root(self.root) is None:
            raise DataError(
                f"data.root={self.root}: no VOCdevkit/VOC2012 with JPEGImages/ and SegmentationClass/; download "
                f"VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and set "
                f"data.root=/path/to/folder containing VOCdevkit/"
            )

    def build_dataset(self, split: str) -> VOCDataset:
        real = self.test_split if split == "test" else split
        return VOCDataset(find_voc_root(self.root), real, None, self.skip_bad_samples)
