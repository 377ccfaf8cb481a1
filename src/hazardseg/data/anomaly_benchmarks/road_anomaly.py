"""RoadAnomaly (Lis et al., ICCV 2019)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hazardseg.data.anomaly_benchmarks.base import (
    IMAGE_EXTS, AnomalyBenchmarkDataModule, AnomalyBenchmarkDataset, Frame,
    check_label_values,
)
from hazardseg.data.readers import skip_or_raise
from hazardseg.errors import DataError

class RoadAnomalyDataset(AnomalyBenchmarkDataset):
    """RoadAnomaly (Lis et al., ICCV 2019) labels_semantic.png: 2 = anomaly -> 1; 0 and 1 -> normal; no void."""

    mask_hint = " (RoadAnomaly labels are frames/<name>.labels/labels_semantic.png)"

    def encode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        check_label_values(raw, (0, 1, 2), path, "the RoadAnomaly label values 0, 1, 2")
        return (raw == 2).astype(np.int64)


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
