"""Datasets and Lightning datamodules (all built on :class:`DataModuleBase`; see :mod:`hazardseg.data.base`).

Batches: ``{"image": float32 (B,3,H,W) ImageNet-normalized, "mask": int64 (B,H,W), "name": list[str]}``.
"""

from hazardseg.data.anomaly_benchmarks import (
    BENCHMARK_DATAMODULES,
    AnomalyBenchmarkDataModule,
    AnomalyBenchmarkDataset,
    FishyscapesLafDataModule,
    Frame,
    LostAndFoundDataModule,
    RoadAnomalyDataModule,
    SmiycAnomalyDataModule,
    SmiycObstacleDataModule,
)
from hazardseg.data.base import DataModuleBase, SegmentationDataModule
from hazardseg.data.dataset import SegDataLoader, SegmentationDataset, collate
from hazardseg.data.labels import LabelSpec
from hazardseg.data.readers import Item
from hazardseg.data.cityscapes import CityscapesDataModule, CityscapesDataset, label_ids_to_train_ids
from hazardseg.data.pet import PetDataModule, PetDataset
from hazardseg.data.stats import class_distribution, format_distribution, split_distribution
from hazardseg.data.streethazards import StreetHazardsDataModule, StreetHazardsDataset, read_odgt
from hazardseg.data.synthetic import SyntheticStreetHazardsDataModule, ensure_synthetic, generate_streethazards
from hazardseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform, denormalize
from hazardseg.data.voc import VOCDataModule, VOCDataset, voc_palette

__all__ = [
    "BENCHMARK_DATAMODULES", "DataModuleBase", "LabelSpec", "AnomalyBenchmarkDataModule", "AnomalyBenchmarkDataset", "FishyscapesLafDataModule", "Frame",
    "LostAndFoundDataModule", "RoadAnomalyDataModule", "SmiycAnomalyDataModule", "SmiycObstacleDataModule",
    "IMAGENET_MEAN", "IMAGENET_STD", "CityscapesDataModule", "CityscapesDataset", "Item", "PetDataModule",
    "PetDataset", "SegDataLoader", "SegmentationDataModule", "SegmentationDataset", "StreetHazardsDataModule",
    "StreetHazardsDataset", "SyntheticStreetHazardsDataModule", "VOCDataModule", "VOCDataset", "build_eval_transform",
    "build_train_transform", "class_distribution", "collate", "denormalize", "ensure_synthetic", "format_distribution",
    "generate_streethazards", "label_ids_to_train_ids", "read_odgt", "split_distribution", "voc_palette",
]  # fmt: skip
