"""LostAndFound (Pinggera et al., IROS 2016) and SMIYC's LostAndFound-testNoKnown."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hazardseg.data.anomaly_benchmarks.base import (
    ANOMALY, NORMAL, VOID, AnomalyBenchmarkDataModule, AnomalyBenchmarkDataset, Frame, check_label_values,
)
from hazardseg.data.readers import skip_or_raise
from hazardseg.errors import DataError

class LostAndFoundDataset(AnomalyBenchmarkDataset):
    """LostAndFound gtCoarse labelIds mapped as SMIYC's ``LAF_CLASSES``: 0 void, 1 road -> normal,
    2..200 obstacles -> anomaly; any other value stays void (the benchmark starts from an all-255 label)."""

    mask_hint = " (use gtCoarse/<split>/<scene>/<fid>_gtCoarse_labelIds.png, not the color or instanceIds files)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        # labelIds are 8-bit: wider values (a 16-bit instanceIds file, ids like 1001) would all become void and the
        # frame would silently count as having no obstacle
        check_label_values(raw, range(256), path, "the 8-bit LostAndFound labelIds 0..255")
        raw = raw.astype(np.int64)
        out = np.full(raw.shape, VOID, np.int64)
        out[raw == 1] = NORMAL
        out[(raw >= 2) & (raw <= 200)] = ANOMALY
        return out


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
