"""StreetHazards (Hendrycks et al., https://github.com/hendrycks/anomaly-seg).

Release layout (``root`` = the folder that holds ``train/`` and ``test/``)::

    train/train.odgt  train/validation.odgt  test/test.odgt        # ONE JSON array per file
    train/images/training/t1-3/*.png   train/annotations/training/t1-3/*.png
    train/images/validation/t4/*.png   train/annotations/validation/t4/*.png
    test/images/test/t5|t6/*.png       test/annotations/test/t5|t6/*.png

Images are (often RGBA) PNGs -> RGB. Annotations are mode-L PNGs with values 1..14; we subtract 1:
0 unlabeled, 1 building, 2 fence, 3 other, 4 pedestrian, 5 pole, 6 road line, 7 road, 8 sidewalk,
9 vegetation, 10 car, 11 wall, 12 traffic sign, 13 anomaly (test only). 13 classes are trained (0..12);
``anomaly_index = 13``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hazardseg.data.base import SegmentationDataModule
from hazardseg.data.dataset import SegmentationDataset
from hazardseg.data.readers import Item, check_inside, check_values, skip_or_raise
from hazardseg.errors import ConfigError, DataError

CLASS_NAMES = (
    "unlabeled", "building", "fence", "other", "pedestrian", "pole", "road line",
    "road", "sidewalk", "vegetation", "car", "wall", "traffic sign",
)  # fmt: skip
NUM_CLASSES = 13
ANOMALY_INDEX = 13
RAW_MIN, RAW_MAX = 1, 14

DOWNLOAD_HINT = (
    "download streethazards_train.tar and streethazards_test.tar from https://github.com/hendrycks/anomaly-seg, "
    "extract both into one folder and set data.root=/path/to/folder containing train/ and test/ "
    "(or export STREETHAZARDS_ROOT)"
)

# split -> (split folder, odgt file name, sub folder under images/ for a directory scan)
SPLIT_LAYOUT = {
    "train": ("train", "train.odgt", "training"),
    "val": ("train", "validation.odgt", "validation"),
    "test": ("test", "test.odgt", "test"),
}
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
LEAKAGE = "a file of another split (e.g. a test image in train.odgt) is data leakage"


def read_odgt(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse an odgt index: one JSON array of ``{"dbName","width","height","fpath_img","fpath_segm"}``.

    (JSON lines are accepted too, for hand-made indices.) UTF-8 (with or without BOM) and BOM-marked
    UTF-16/32 are read; paths must be non-empty strings.
    """
    path = Path(path)
    try:
        text = _decode(path.read_bytes(), path)
    except FileNotFoundError:
        raise DataError(f"{path}: index file not found; set index=scan to scan the folders instead") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an odgt index file") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        try:  # JSON lines fallback
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise DataError(f"{path}: not a valid odgt file ({e}); expected one JSON array of entries") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "fpath_img" in e and "fpath_segm" in e for e in entries
    ):
        raise DataError(f"{path}: odgt entries must be objects with 'fpath_img' and 'fpath_segm' keys")
    for i, entry in enumerate(entries):
        for key in ("fpath_img", "fpath_segm"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise DataError(f"{path}: entry {i} has {key}={entry[key]!r}; expected a file path (a string, relative to "
                                f"the split folder). Fix: correct that entry or regenerate the index")
    return entries


def _decode(raw: bytes, path: Path) -> str:
    import codecs

    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            break
    else:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not {encoding.upper().removesuffix('-SIG')} text ({err.reason} at byte {err.start}). "
                        f"Fix: save the index as UTF-8") from None


class StreetHazardsDataset(SegmentationDataset):
    """One StreetHazards split.

    Args:
        root: folder containing ``train/`` and ``test/``.
        split: 'train' | 'val' | 'test'.
        transform: callable on the sample dict (or None: uint8 image, int64 mask).
        index: 'auto' (odgt when the file exists, else scan) | 'odgt' | 'scan'.
        odgt: a custom odgt file (paths relative to the split folder ``root/<train|test>``).
        skip_bad_samples: skip (and record) missing/corrupt samples instead of raising.
        allow_external_paths: accept odgt paths that leave the split folder (absolute or ``../``); off by
            default, because a file of another split listed in an index is data leakage.
    """

    mask_hint = " (StreetHazards annotations are mode-L PNGs with values 1..14)"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        index: str = "auto",
        odgt: str | os.PathLike | None = None,
        skip_bad_samples: bool = False,
        allow_external_paths: bool = False,
    ):
        if split not in SPLIT_LAYOUT:
            raise ConfigError(f"split={split!r}: expected one of {sorted(SPLIT_LAYOUT)}")
        if index not in ("auto", "odgt", "scan"):
            raise ConfigError(f"data.index={index!r}: expected auto, odgt or scan")
        self.root = Path(root)
        self.split = split
        folder, odgt_name, scan_sub = SPLIT_LAYOUT[split]
        self.split_dir = self.root / folder
        if not self.split_dir.is_dir():
            raise DataError(f"{self.split_dir}: StreetHazards split folder not found; {DOWNLOAD_HINT}")
        odgt_path = Path(odgt) if odgt is not None else self.split_dir / odgt_name
        if index == "auto":
            index = "odgt" if (odgt is not None or odgt_path.is_file()) else "scan"
        self.index = index
        self.odgt = odgt_path if index == "odgt" else None
        missing: dict[str, str] = {}
        if index == "odgt":
            items = []
            for i, e in enumerate(read_odgt(odgt_path)):
                img, seg = self.split_dir / e["fpath_img"], self.split_dir / e["fpath_segm"]
                if not allow_external_paths:
                    for f in (img, seg):
                        check_inside(f, self.split_dir, odgt_path, i, LEAKAGE)
                for f in (img, seg):
                    if not f.is_file():
                        msg = f"{f}: listed in {odgt_path} but missing; re-extract the dataset or use a matching odgt (or index=scan)"
                        skip_or_raise(msg, str(img), skip_bad_samples, missing)
                        break
                else:
                    items.append(Item(img, seg, Path(e["fpath_img"]).as_posix()))
            where = str(odgt_path)
        else:
            items = self.scan(self.split_dir, scan_sub, skip_bad_samples, missing)
            where = str(self.split_dir / "images" / scan_sub)
        if not items:
            raise DataError(f"StreetHazards {split} split is empty: no samples found in {where}; {DOWNLOAD_HINT}")
        super().__init__(items, transform, skip_bad_samples)
        if missing:
            import warnings

            warnings.warn(f"StreetHazards {split}: skipped {len(missing)} missing samples, e.g. {next(iter(missing))}", stacklevel=2)
        self.bad_samples.update(missing)

    @staticmethod
    def scan(split_dir: Path, sub: str, skip_bad_samples: bool = False, missing: dict | None = None) -> list[Item]:
        """Recursive scan of ``images/<sub>``; annotations pair by the same relative path under ``annotations/``."""
        img_root = split_dir / "images" / sub
        if not img_root.is_dir():
            return []
        items = []
        for img in sorted(p for p in img_root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
            rel = img.relative_to(split_dir)
            seg = split_dir / "annotations" / rel.relative_to("images")
            if not seg.is_file():
                alt = seg.with_suffix(".png")
                if alt.is_file():
                    seg = alt
                else:
                    msg = f"{img}: no annotation at {seg}; every image needs an annotation with the same relative name"
                    skip_or_raise(msg, str(img), skip_bad_samples, missing)
                    continue
            items.append(Item(img, seg, rel.as_posix()))
        return items

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        # The anomaly label exists only in the test split: in train/val it would be a 14th class the
        # network has no output for (and cross-entropy fails on an out-of-range target).
        top = RAW_MAX if self.split == "test" else RAW_MAX - 1
        lo, hi = int(raw.min()), int(raw.max())
        if lo < RAW_MIN or hi > top:
            where = f"StreetHazards' {self.split} range {RAW_MIN}..{top}"
            if top < RAW_MAX:
                where += f" ({RAW_MAX} = anomaly, test split only)"
            check_values(raw, np.arange(RAW_MIN, top + 1), path, where)
        return raw.astype(np.int64) - 1


class StreetHazardsDataModule(SegmentationDataModule):
    """StreetHazards datamodule: train = train.odgt (t1-3), val = validation.odgt (t4), test = test.odgt (t5, t6)."""

    name = "streethazards"
    NUM_CLASSES = NUM_CLASSES
    CLASS_NAMES = CLASS_NAMES
    DEFAULT_IGNORE_INDEX = None
    ANOMALY_INDEX = ANOMALY_INDEX

    DEFAULT_IMAGE_SIZE = (360, 640)
    DEFAULT_BATCH_SIZE = 4

    def __init__(
        self,
        index: str = "auto",
        **common: Any,
    ):
        super().__init__(**common)
        if index not in ("auto", "odgt", "scan"):
            raise ConfigError(f"data.index={index!r}: expected auto, odgt or scan")
        self.index = index

    def check_root(self) -> None:
        if self.root is None:
            raise DataError(f"data.root is not set: {DOWNLOAD_HINT}")
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root}: folder not found; {DOWNLOAD_HINT}")
        if not (self.root / "train").is_dir() and not (self.root / "test").is_dir():
            nested = [p.parent for p in self.root.glob("*/train")] + [p.parent for p in self.root.glob("*/test")]
            extra = f" (found one in {nested[0]}: set data.root={nested[0]})" if nested else ""
            raise DataError(f"data.root={self.root} has no train/ or test/ folder{extra}; {DOWNLOAD_HINT}")

    def build_dataset(self, split: str) -> StreetHazardsDataset:
        return StreetHazardsDataset(self.root, split, None, index=self.index, skip_bad_samples=self.skip_bad_samples,
                                    allow_external_paths=self.allow_external_paths)
