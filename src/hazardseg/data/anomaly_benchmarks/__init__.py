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

from hazardseg.data.anomaly_benchmarks.base import (
    ANOMALY,
    NORMAL,
    VOID,
    AnomalyBenchmarkDataModule,
    AnomalyBenchmarkDataset,
    Frame,
    SizeGroupedBatchSampler,
    check_label_values,
    collate_frames,
)
from hazardseg.data.anomaly_benchmarks.fishyscapes import FISHY_LAF_VAL, FishyscapesDataset, FishyscapesLafDataModule
from hazardseg.data.anomaly_benchmarks.lost_and_found import (
    LAF_INVALID_TEST_POSITIONS,
    LAF_KNOWN_OBJECT_PREFIXES,
    LostAndFoundDataModule,
    LostAndFoundDataset,
)
from hazardseg.data.anomaly_benchmarks.road_anomaly import RoadAnomalyDataModule, RoadAnomalyDataset
from hazardseg.data.anomaly_benchmarks.smiyc import SmiycAnomalyDataModule, SmiycDataset, SmiycObstacleDataModule

# One module per benchmark family: a new benchmark is a module here + its conf/data YAML (+ a line below).
BENCHMARK_DATAMODULES: dict[str, type[AnomalyBenchmarkDataModule]] = {
    cls.name: cls
    for cls in (SmiycAnomalyDataModule, SmiycObstacleDataModule, LostAndFoundDataModule, FishyscapesLafDataModule,
                RoadAnomalyDataModule)
}

__all__ = ["ANOMALY", "BENCHMARK_DATAMODULES", "FISHY_LAF_VAL", "LAF_INVALID_TEST_POSITIONS", "LAF_KNOWN_OBJECT_PREFIXES", "NORMAL", "VOID", "AnomalyBenchmarkDataModule",
           "AnomalyBenchmarkDataset", "FishyscapesDataset", "FishyscapesLafDataModule", "Frame", "LostAndFoundDataModule",
           "LostAndFoundDataset", "RoadAnomalyDataModule", "RoadAnomalyDataset", "SizeGroupedBatchSampler",
           "SmiycAnomalyDataModule", "SmiycDataset", "SmiycObstacleDataModule", "check_label_values", "collate_frames"]
