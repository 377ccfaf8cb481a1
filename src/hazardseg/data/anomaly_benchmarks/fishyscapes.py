"""Fishyscapes Lost & Found (Blum et al., IJCV 2021): its labels, LostAndFound's images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


from hazardseg.data.anomaly_benchmarks.base import (
    AnomalyBenchmarkDataModule, Frame,
)
from hazardseg.data.readers import skip_or_raise
from hazardseg.errors import DataError

from hazardseg.data.anomaly_benchmarks.lost_and_found import LAF_HINT, LAF_SUFFIX
from hazardseg.data.anomaly_benchmarks.smiyc import SmiycDataset

class FishyscapesDataset(SmiycDataset):
    mask_hint = " (Fishyscapes L&F labels are labels/val/<fid>_fishy-labels.png with values 0, 1, 255)"


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
