"""SegmentMeIfYouCan: RoadAnomaly21 (AnomalyTrack) and RoadObstacle21 (ObstacleTrack)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from hazardseg.data.anomaly_benchmarks.base import (
    ANOMALY, NORMAL, VOID, AnomalyBenchmarkDataModule, AnomalyBenchmarkDataset, Frame,
    _image_files, check_label_values,
)
from hazardseg.errors import DataError

class SmiycDataset(AnomalyBenchmarkDataset):
    """SMIYC label masks: 0 not anomaly, 1 anomaly / obstacle, 255 void (used as they are)."""

    mask_hint = " (SMIYC labels are labels_masks/<fid>_labels_semantic.png with values 0, 1, 255)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_label_values(raw, (NORMAL, ANOMALY, VOID), path, "the SMIYC label values 0, 1, 255")
        return raw.astype(np.int64)


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

    LABELS_AT = "labels_masks/<fid>_labels_semantic.png"

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
