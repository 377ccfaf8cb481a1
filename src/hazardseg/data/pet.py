"""Oxford-IIIT Pet (trimaps): 1 pet, 2 background, 3 border -> 0, 1, 2.

Layout: ``root/images/<name>.jpg``, ``root/annotations/trimaps/<name>.png``. Splits come from
``root/annotations/trainval.txt`` / ``test.txt`` (first column = image name; val is a seeded
``val_fraction`` of trainval) when present, else from a seeded split of the directory scan
(``val_fraction``, ``test_fraction``). Some "JPEGs" are PNG/CMYK/grayscale: always ``.convert("RGB")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.data.base import SegmentationDataModule
from hazardseg.data.dataset import SegmentationDataset
from hazardseg.data.readers import Item, check_values
from hazardseg.errors import ConfigError, DataError

CLASS_NAMES = ("pet", "background", "border")
NUM_CLASSES = 3


class PetDataset(SegmentationDataset):
    mask_hint = " (Oxford-IIIT Pet trimaps in annotations/trimaps/*.png, values 1,2,3)"

    def __init__(self, items: Sequence[Item], transform: Callable | None = None, skip_bad_samples: bool = False):
        super().__init__(items, transform, skip_bad_samples)

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_values(raw, (1, 2, 3), path, "the Pet trimap values {1,2,3}")
        return raw.astype(np.int64) - 1


def _item(root: Path, name: str, where: str) -> Item:
    img = root / "images" / f"{name}.jpg"
    seg = root / "annotations" / "trimaps" / f"{name}.png"
    for f in (img, seg):
        if not f.is_file():
            raise DataError(f"{f}: listed in {where} but missing; re-extract images.tar.gz / annotations.tar.gz")
    return Item(img, seg, img.relative_to(root).as_posix())


def _read_list(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def pet_splits(root: Path, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Image names per split ('train'|'val'|'test'), deterministic for a given seed."""
    ann = root / "annotations"
    rng = np.random.default_rng(seed)
    if (ann / "trainval.txt").is_file():
        trainval = _read_list(ann / "trainval.txt")
        order = rng.permutation(len(trainval))
        n_val = math.ceil(len(trainval) * val_fraction) if val_fraction > 0 else 0
        val = sorted(trainval[i] for i in order[:n_val])
        train = sorted(trainval[i] for i in order[n_val:])
        test = _read_list(ann / "test.txt") if (ann / "test.txt").is_file() else []
        return {"train": train, "val": val, "test": test}
    names = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    order = rng.permutation(len(names))
    n_test = math.ceil(len(names) * test_fraction) if test_fraction > 0 else 0
    n_val = math.ceil(len(names) * val_fraction) if val_fraction > 0 else 0
    test = sorted(names[i] for i in order[:n_test])
    val = sorted(names[i] for i in order[n_test : n_test + n_val])
    train = sorted(names[i] for i in order[n_test + n_val :])
    return {"train": train, "val": val, "test": test}


class PetDataModule(SegmentationDataModule):
    name = "oxford_iiit_pet"
    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DEFAULT_IGNORE_INDEX = None

    DEFAULT_IMAGE_SIZE = (256, 256)
    DEFAULT_BATCH_SIZE = 16

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **common: Any,
    ):
        super().__init__(**common)
        for key, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"data.{key}={v!r}: expected a fraction in [0, 1)")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} must be < 1")
        self.val_fraction, self.test_fraction, self.split_seed = float(val_fraction), float(test_fraction), int(split_seed)
        self._splits: dict[str, list[str]] | None = None

    def check_root(self) -> None:
        if self.root is None or not (self.root / "images").is_dir():
            raise DataError(
                f"data.root={self.root}: no images/ folder; download images.tar.gz and annotations.tar.gz from "
                f"https://www.robots.ox.ac.uk/~vgg/data/pets/ and set data.root=/path/to/folder containing images/ and annotations/"
            )

    def build_dataset(self, split: str) -> PetDataset:
        if self._splits is None:
            self._splits = pet_splits(self.root, self.val_fraction, self.test_fraction, self.split_seed)
        names = self._splits[split]
        list_file = self.root / "annotations" / ("test.txt" if split == "test" else "trainval.txt")
        where = str(list_file) if list_file.is_file() else f"the directory scan of {self.root / 'images'}"
        items, missing = [], {}
        for n in names:
            try:
                items.append(_item(self.root, n, where))
            except DataError as e:
                if not self.skip_bad_samples:
                    raise
                missing[n] = str(e)
        if not items:
            raise DataError(f"Oxford-IIIT Pet {split} split is empty ({where}); check data.root and data.val_fraction/test_fraction")
        ds = PetDataset(items, None, self.skip_bad_samples)
        ds.bad_samples.update(missing)
        return ds
