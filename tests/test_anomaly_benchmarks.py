"""Test-only anomaly benchmarks: genuine SMIYC frames and format-faithful generated folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from benchmark_folders import (
    fishyscapes_folder,
    laf_fid,
    laf_test_fids,
    lost_and_found_folder,
    road_anomaly_folder,
    save_image,
    smiyc_folder,
)
from conftest import CONF, SAMPLES
from hazardseg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FishyscapesLafDataModule,
    LostAndFoundDataModule,
    RoadAnomalyDataModule,
    SmiycAnomalyDataModule,
    SmiycObstacleDataModule,
)
from hazardseg.data.anomaly_benchmarks import (
    FISHY_LAF_VAL,
    LAF_INVALID_TEST_POSITIONS,
    LAF_KNOWN_OBJECT_PREFIXES,
    collate_frames,
)
from hazardseg.errors import ConfigError, DataError

SMIYC = SAMPLES / "smiyc"
needs_samples = pytest.mark.skipif(not SMIYC.is_dir(), reason=f"genuine SMIYC samples not found at {SMIYC}")
BENCHMARKS = ["smiyc_anomaly", "smiyc_obstacle", "lost_and_found", "fishyscapes_laf", "road_anomaly"]


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _batches(dm) -> list[dict]:
    dm.setup("test")
    return list(dm.test_dataloader())


def _unnormalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return image * std + mean


# ---------------------------------------------------------------------------------------------
# genuine SMIYC frames
# ---------------------------------------------------------------------------------------------
@needs_samples
def test_genuine_anomaly_track_frame_native_size():
    dm = SmiycAnomalyDataModule(root=SMIYC / "dataset_AnomalyTrack", num_workers=0)
    (batch,) = _batches(dm)
    assert batch["image"].shape == (1, 3, 1024, 2048) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (1, 1024, 2048) and batch["mask"].dtype == torch.int64
    values, counts = batch["mask"].unique(return_counts=True)
    # pixel counts of SOURCES.md (labels_masks made from the presentation's colour masks)
    assert dict(zip(values.tolist(), counts.tolist())) == {0: 1480959, 1: 415531, 255: 200662}
    assert batch["name"] == ["carriage0002"] and batch["group"] == ["AnomalyTrack-all"]
    assert batch["has_label"].tolist() == [True]
    # the normalised image decodes back to the JPEG's pixels
    with Image.open(SMIYC / "dataset_AnomalyTrack/images/carriage0002.jpg") as im:
        rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(_unnormalise(batch["image"][0]), rgb, atol=1e-5)


@needs_samples
def test_genuine_obstacle_track_webp_resized_input_native_label():
    dm = SmiycObstacleDataModule(root=SMIYC / "dataset_ObstacleTrack", image_size=[270, 480], num_workers=0)
    batches = _batches(dm)
    assert [b["name"][0] for b in batches] == ["gravel_boot_5", "greyasphalt_basket_1"]
    want = {"gravel_boot_5": {0: 461820, 1: 371, 255: 1611409}, "greyasphalt_basket_1": {0: 814720, 1: 14696, 255: 1244184}}
    for b in batches:
        assert b["image"].shape == (1, 3, 270, 480)
        assert b["mask"].shape == (1, 1080, 1920)  # never resized
        values, counts = b["mask"].unique(return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist())) == want[b["name"][0]]
        assert b["group"] == ["ObstacleTrack-all"]


@needs_samples
def test_genuine_obstacle_frames_batch_together_when_sizes_match():
    dm = SmiycObstacleDataModule(root=SMIYC / "dataset_ObstacleTrack", batch_size=2, num_workers=0)
    (batch,) = _batches(dm)
    assert batch["image"].shape == (2, 3, 1080, 1920) and batch["has_label"].tolist() == [True, True]


def test_contract_attributes():
    dm = SmiycAnomalyDataModule(root="/nowhere")
    assert dm.num_classes is None and dm.class_names == [] and dm.semantic_labels is False and dm.test_only is True
    assert dm.ANOMALY_INDEX == dm.anomaly_index == 1 and dm.ignore_index == 255 and dm.batch_size == 1
    assert [m.TRACK for m in (SmiycAnomalyDataModule, SmiycObstacleDataModule, LostAndFoundDataModule,
                              FishyscapesLafDataModule, RoadAnomalyDataModule)] == ["anomaly", "obstacle", "obstacle", "anomaly", "anomaly"]


# ---------------------------------------------------------------------------------------------
# generated SMIYC folders: mixed sizes, formats, missing labels, subsets
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def anomaly_track(tmp_path) -> Path:
    root = tmp_path / "dataset_AnomalyTrack"
    smiyc_folder(root, [("cow0000", (64, 32), False), ("piano0000", (40, 24), False),
                        ("validation0000", (64, 32), True), ("validation0001", (40, 24), True)], ext=".jpg")
    return root


def test_mixed_sizes_native_batch_size_one(anomaly_track):
    batches = _batches(SmiycAnomalyDataModule(root=anomaly_track, num_workers=0))
    shapes = {b["name"][0]: (tuple(b["image"].shape[-2:]), tuple(b["mask"].shape[-2:])) for b in batches}
    assert shapes == {"cow0000": ((32, 64), (32, 64)), "piano0000": ((24, 40), (24, 40)),
                      "validation0000": ((32, 64), (32, 64)), "validation0001": ((24, 40), (24, 40))}


def test_mixed_sizes_batches_grouped_by_size(anomaly_track):
    batches = _batches(SmiycAnomalyDataModule(root=anomaly_track, batch_size=4, num_workers=0))
    assert [b["name"] for b in batches] == [["cow0000", "validation0000"], ["piano0000", "validation0001"]]
    # with a configured input size only the label sizes differ
    batches = _batches(SmiycAnomalyDataModule(root=anomaly_track, batch_size=4, image_size=[16, 32], num_workers=0))
    assert [tuple(b["image"].shape) for b in batches] == [(2, 3, 16, 32), (2, 3, 16, 32)]
    assert [tuple(b["mask"].shape) for b in batches] == [(2, 32, 64), (2, 24, 40)]


def test_collate_refuses_mixed_sizes(anomaly_track):
    ds = SmiycAnomalyDataModule(root=anomaly_track, num_workers=0).dataset("test")
    with pytest.raises(DataError) as e:
        collate_frames([ds[0], ds[1]])
    assert "data.batch_size=1" in _one_line(e)


def test_frames_without_label_are_void_and_flagged(anomaly_track):
    batches = {b["name"][0]: b for b in _batches(SmiycAnomalyDataModule(root=anomaly_track, num_workers=0))}
    assert batches["cow0000"]["has_label"].tolist() == [False]
    assert bool((batches["cow0000"]["mask"] == 255).all())
    assert batches["validation0000"]["has_label"].tolist() == [True]
    assert set(batches["validation0000"]["mask"].unique().tolist()) == {0, 1, 255}


@pytest.mark.parametrize("subset,names", [
    ("all", ["cow0000", "piano0000", "validation0000", "validation0001"]),
    ("validation", ["validation0000", "validation0001"]),
    ("test", ["cow0000", "piano0000"]),
])
def test_anomaly_track_subsets(anomaly_track, subset, names):
    dm = SmiycAnomalyDataModule(root=anomaly_track, subset=subset)
    dm.setup("test")
    assert [f.name for f in dm.frames] == names


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_image_formats(tmp_path, ext):
    root = smiyc_folder(tmp_path / "dataset_ObstacleTrack", [("gravel_boot_1", (48, 32), True)], ext=ext)
    (batch,) = _batches(SmiycObstacleDataModule(root=root, num_workers=0))
    with Image.open(root / "images" / f"gravel_boot_1{ext}") as im:
        rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.allclose(_unnormalise(batch["image"][0]), rgb, atol=1e-5)


def test_obstacle_track_subsets_follow_the_benchmark(tmp_path):
    fids = ["gravel_a_1", "driveway_b_1", "snowstorm1_c", "validation_1", "validation_19", "validation_2",
            "validation_23", "curvy-street_d_4", "unknownscene_e_1"]
    root = smiyc_folder(tmp_path / "dataset_ObstacleTrack", [(f, (16, 8), True) for f in fids], ext=".webp")

    def names(subset):
        dm = SmiycObstacleDataModule(root=root, subset=subset)
        dm.setup("test")
        return [f.name for f in dm.frames]

    with pytest.warns(UserWarning, match="no ObstacleTrack scene"):
        assert names("all") == sorted(set(fids) - {"unknownscene_e_1"})
    with pytest.warns(UserWarning):
        assert names("test") == ["curvy-street_d_4", "gravel_a_1"]
        assert names("validation") == ["validation_1", "validation_2"]  # validation_19 and _2x are excluded
        assert names("night") == ["driveway_b_1"]
        assert names("snowstorm") == ["snowstorm1_c"]


# ---------------------------------------------------------------------------------------------
# LostAndFound
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def laf_full(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("laf") / "LostAndFound"
    fids = laf_test_fids()
    assert len(fids) == 1203
    return lost_and_found_folder(root, "test", fids, size=(8, 4), same_content=True)


def test_lost_and_found_test_no_known_is_the_smiyc_definition(laf_full):
    dm = LostAndFoundDataModule(root=laf_full)
    dm.setup("test")
    all_fids = sorted(laf_test_fids())
    invalid = {all_fids[i] for i in LAF_INVALID_TEST_POSITIONS}
    want = [f for f in all_fids if f not in invalid and not f.startswith(LAF_KNOWN_OBJECT_PREFIXES)]
    assert [f.name for f in dm.frames] == want
    assert {f.group for f in dm.frames} == {"LostAndFound-test"}
    assert not any(f.name.startswith("15_Rechbergstr_Deckenpfronn") for f in dm.frames)
    dm_valid = LostAndFoundDataModule(root=laf_full, subset="test_valid")
    dm_valid.setup("test")
    assert len(dm_valid.frames) == 1203 - len(LAF_INVALID_TEST_POSITIONS)


def test_lost_and_found_label_mapping(tmp_path):
    fid = laf_fid("04_Maurener_Weg_8", 0, 30)
    root = lost_and_found_folder(tmp_path / "laf", "test", [fid], size=(8, 4))
    ids = np.array([[0, 1, 2, 200], [201, 255, 7, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.uint8)
    ids = np.repeat(ids, 2, axis=1)
    save_image(ids, root / "gtCoarse/test/04_Maurener_Weg_8" / f"{fid}_gtCoarse_labelIds.png")
    (batch,) = _batches(LostAndFoundDataModule(root=root, subset="test", num_workers=0))
    want = np.array([[255, 0, 1, 1], [255, 255, 1, 0], [0, 0, 0, 0], [255, 255, 255, 255]])
    assert batch["mask"][0].numpy().tolist() == np.repeat(want, 2, axis=1).tolist()


def test_lost_and_found_16_bit_instance_labels_are_refused(tmp_path):
    # an instanceIds-like 16-bit file: ids above 255 would all become void ("no obstacle") without the value check
    fid = laf_fid("04_Maurener_Weg_8", 0, 30)
    root = lost_and_found_folder(tmp_path / "laf", "test", [fid], size=(8, 4))
    ids = np.array([[0, 1, 1001, 1001], [1, 1, 1002, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.uint16).repeat(2, axis=1)
    path = root / "gtCoarse/test/04_Maurener_Weg_8" / f"{fid}_gtCoarse_labelIds.png"
    Image.fromarray(ids).save(path)  # uint16 -> a 16-bit PNG
    assert np.array(Image.open(path)).max() == 1002  # really a 16-bit file
    with pytest.raises(DataError) as e:
        _batches(LostAndFoundDataModule(root=root, subset="test", num_workers=0))
    line = _one_line(e)
    assert str(path) in line and "1001" in line and "labelIds" in line


def test_lost_and_found_partial_split(tmp_path):
    root = lost_and_found_folder(tmp_path / "laf", "test", [laf_fid("04_Maurener_Weg_8", 0, k) for k in range(3)])
    with pytest.raises(DataError) as e:
        LostAndFoundDataModule(root=root).setup("test")
    msg = _one_line(e)
    assert "1203" in msg and "has 3" in msg and "data.subset=test" in msg
    dm = LostAndFoundDataModule(root=root, subset="test")
    dm.setup("test")
    assert len(dm.frames) == 3


def test_lost_and_found_webp_images_and_missing_label(tmp_path):
    fids = [laf_fid("04_Maurener_Weg_8", 0, k) for k in range(2)]
    root = lost_and_found_folder(tmp_path / "laf", "test", fids, ext=".webp")
    (root / "gtCoarse/test/04_Maurener_Weg_8" / f"{fids[1]}_gtCoarse_labelIds.png").unlink()
    with pytest.raises(DataError) as e:
        LostAndFoundDataModule(root=root, subset="test").setup("test")
    assert "gtCoarse" in _one_line(e) and fids[1] in str(e.value)
    dm = LostAndFoundDataModule(root=root, subset="test", skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 1"):
        dm.setup("test")
    assert [f.name for f in dm.frames] == fids[:1] and len(dm.bad_samples) == 1


# ---------------------------------------------------------------------------------------------
# Fishyscapes L&F
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def fishy(tmp_path) -> tuple[Path, Path, list[str]]:
    fids = [FISHY_LAF_VAL[0], FISHY_LAF_VAL[50], FISHY_LAF_VAL[99]]
    laf = tmp_path / "LostAndFound"
    lost_and_found_folder(laf, "train", fids[:2])
    lost_and_found_folder(laf, "test", fids[2:])
    return fishyscapes_folder(tmp_path / "fs_laf", fids), laf, fids


def test_fishyscapes_frames_images_and_groups(fishy):
    root, laf, fids = fishy
    dm = FishyscapesLafDataModule(root=root, laf_root=laf, subset="all", num_workers=0)
    batches = _batches(dm)
    assert [b["name"][0] for b in batches] == sorted(fids)
    assert [b["group"][0] for b in batches] == ["LostAndFound-train", "LostAndFound-train", "LostAndFound-test"]
    label = np.array(Image.open(root / "labels/val" / f"{fids[0]}_fishy-labels.png"))
    assert batches[0]["mask"][0].numpy().tolist() == label.tolist()  # 0 / 1 / 255 as is


def test_fishyscapes_val_needs_the_100_frames(fishy):
    root, laf, fids = fishy
    with pytest.raises(DataError) as e:
        FishyscapesLafDataModule(root=root, laf_root=laf).setup("test")
    assert "_fishy-labels.png" in _one_line(e)
    dm = FishyscapesLafDataModule(root=root, laf_root=laf, skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 97"):
        dm.setup("test")
    assert sorted(f.name for f in dm.frames) == sorted(fids)


def test_fishyscapes_needs_laf_root(fishy):
    root, _, _ = fishy
    with pytest.raises(DataError) as e:
        FishyscapesLafDataModule(root=root, laf_root=None).setup("test")
    assert "data.laf_root" in _one_line(e)


# ---------------------------------------------------------------------------------------------
# RoadAnomaly
# ---------------------------------------------------------------------------------------------
def test_road_anomaly_layout_and_labels(tmp_path):
    root = road_anomaly_folder(tmp_path / "RoadAnomaly", ["animals01_a", "cones02_b"], [(48, 27), (32, 18)])
    raw = np.array(Image.open(root / "frames/animals01_a.labels/labels_semantic.png"))
    batches = _batches(RoadAnomalyDataModule(root=root, num_workers=0))
    assert [b["name"][0] for b in batches] == ["animals01_a", "cones02_b"]
    assert batches[0]["mask"][0].numpy().tolist() == (raw == 2).astype(int).tolist()  # 2 -> 1, 0 and 1 -> 0
    assert 1 in raw and batches[0]["group"] == ["RoadAnomaly"]


def test_road_anomaly_listed_jpg_found_as_webp(tmp_path):
    root = road_anomaly_folder(tmp_path / "RoadAnomaly", ["animals01_a"], [(48, 27)], ext=".webp")
    (root / "frame_list.json").write_text(json.dumps(["animals01_a.jpg"]))
    (batch,) = _batches(RoadAnomalyDataModule(root=root, num_workers=0))
    assert batch["image"].shape == (1, 3, 27, 48)


def test_road_anomaly_unexpected_label_value(tmp_path):
    root = road_anomaly_folder(tmp_path / "RoadAnomaly", ["animals01_a"], [(48, 27)])
    save_image(np.full((27, 48), 7, np.uint8), root / "frames/animals01_a.labels/labels_semantic.png")
    dm = RoadAnomalyDataModule(root=root, num_workers=0)
    with pytest.raises(DataError) as e:
        _batches(dm)
    assert "labels_semantic.png" in _one_line(e) and "[7]" in str(e.value)


# ---------------------------------------------------------------------------------------------
# bad inputs: one-line errors naming the key/file and the fix
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SmiycAnomalyDataModule, SmiycObstacleDataModule, LostAndFoundDataModule,
                                 FishyscapesLafDataModule, RoadAnomalyDataModule])
@pytest.mark.parametrize("root", [None, "/nonexistent/benchmark"])
def test_missing_root(cls, root):
    with pytest.raises(DataError) as e:
        cls(root=root).setup("test")
    msg = _one_line(e)
    assert "data.root" in msg and "download" in msg.lower()


def test_empty_and_nested_folders(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        SmiycAnomalyDataModule(root=tmp_path / "empty").setup("test")
    assert "no frames found" in _one_line(e)
    smiyc_folder(tmp_path / "outer" / "dataset_AnomalyTrack", [("cow0000", (16, 8), True)])
    with pytest.raises(DataError) as e:
        SmiycAnomalyDataModule(root=tmp_path / "outer").setup("test")
    assert f"set data.root={tmp_path / 'outer' / 'dataset_AnomalyTrack'}" in _one_line(e)
    (tmp_path / "laf" / "leftImg8bit" / "test").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        LostAndFoundDataModule(root=tmp_path / "laf", subset="test").setup("test")
    assert "no frames found" in _one_line(e)
    (tmp_path / "ra").mkdir()
    with pytest.raises(DataError) as e:
        RoadAnomalyDataModule(root=tmp_path / "ra").setup("test")
    assert "frame_list.json" in _one_line(e)


def test_label_of_wrong_size(tmp_path):
    root = smiyc_folder(tmp_path / "dataset_AnomalyTrack", [("validation0000", (64, 32), True)])
    save_image(np.zeros((16, 32), np.uint8), root / "labels_masks" / "validation0000_labels_semantic.png")
    with pytest.raises(DataError) as e:
        _batches(SmiycAnomalyDataModule(root=root, num_workers=0))
    msg = _one_line(e)
    assert "32x16" in msg and "64x32" in msg and "validation0000_labels_semantic.png" in msg


def test_smiyc_label_with_foreign_values(tmp_path):
    root = smiyc_folder(tmp_path / "dataset_AnomalyTrack", [("validation0000", (64, 32), True)])
    save_image(np.full((32, 64), 13, np.uint8), root / "labels_masks" / "validation0000_labels_semantic.png")
    with pytest.raises(DataError) as e:
        _batches(SmiycAnomalyDataModule(root=root, num_workers=0))
    assert "[13]" in _one_line(e)


def test_test_only_refuses_fit(anomaly_track):
    dm = SmiycAnomalyDataModule(root=anomaly_track)
    for call in (lambda: dm.setup("fit"), dm.train_dataloader, dm.val_dataloader, dm.fit_dataloader):
        with pytest.raises(ConfigError) as e:
            call()
        msg = _one_line(e)
        assert "test-only" in msg and "eval.py" in msg


@pytest.mark.parametrize("kwargs,key", [({"subset": "train"}, "data.subset"), ({"ignore_index": 1}, "data.ignore_index"),
                                        ({"image_size": [0, 5]}, "data.image_size"), ({"batch_size": 0}, "data.batch_size")])
def test_bad_options(kwargs, key):
    with pytest.raises(ConfigError) as e:
        SmiycAnomalyDataModule(root="/x", **kwargs)
    assert key in _one_line(e)


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
def test_benchmark_configs_instantiate_and_load(tmp_path):
    smiyc_folder(tmp_path / "dataset_AnomalyTrack", [("validation0000", (32, 16), True)])
    smiyc_folder(tmp_path / "dataset_ObstacleTrack", [("gravel_a_1", (32, 16), True)], ext=".webp")
    fid = FISHY_LAF_VAL[0]
    lost_and_found_folder(tmp_path / "LostAndFound", "test", [laf_fid("04_Maurener_Weg_8", 0, 30)])
    lost_and_found_folder(tmp_path / "LostAndFound", "train", [fid])
    fishyscapes_folder(tmp_path / "fs_laf", [fid])
    road_anomaly_folder(tmp_path / "RoadAnomaly", ["animals01_a"], [(32, 18)])
    overrides = {
        "smiyc_anomaly": {"root": tmp_path / "dataset_AnomalyTrack"},
        "smiyc_obstacle": {"root": tmp_path / "dataset_ObstacleTrack"},
        "lost_and_found": {"root": tmp_path / "LostAndFound", "subset": "test"},
        "fishyscapes_laf": {"root": tmp_path / "fs_laf", "laf_root": tmp_path / "LostAndFound", "subset": "all"},
        "road_anomaly": {"root": tmp_path / "RoadAnomaly"},
    }
    for name in BENCHMARKS:
        cfg = OmegaConf.load(CONF / "data" / f"{name}.yaml")
        cfg.merge_with({k: str(v) for k, v in overrides[name].items()} | {"num_workers": 0})
        dm = instantiate(cfg)
        assert dm.name == name and dm.image_size is None and dm.num_classes is None
        (batch,) = _batches(dm)
        assert batch["has_label"].tolist() == [True] and batch["mask"].shape[-2:] == batch["image"].shape[-2:]


# ---------------------------------------------------------------------------------------------
# A frame id read twice: refused by every reader (it would weigh double and overwrite its submission file)
# ---------------------------------------------------------------------------------------------
def test_road_anomaly_frame_listed_twice(tmp_path):
    root = road_anomaly_folder(tmp_path / "RoadAnomaly", ["animals01_a", "cones02_b"], [(48, 27), (32, 18)])
    (root / "frame_list.json").write_text(json.dumps(["animals01_a.jpg", "cones02_b.jpg", "animals01_a.jpg"]))
    with pytest.raises(DataError) as e:
        RoadAnomalyDataModule(root=root, num_workers=0).setup("test")
    line = _one_line(e)
    assert "'animals01_a' is listed twice" in line and "animals01_a.jpg" in line and "scored twice" in line


@pytest.mark.parametrize("module", ["anomaly", "obstacle"])
def test_smiyc_frame_id_with_two_images(tmp_path, module):
    cls, folder, fid = ((SmiycAnomalyDataModule, "dataset_AnomalyTrack", "validation0000") if module == "anomaly"
                        else (SmiycObstacleDataModule, "dataset_ObstacleTrack", "gravel_obj1_1"))
    root = smiyc_folder(tmp_path / folder, [(fid, (64, 32), True)], ext=".jpg" if module == "anomaly" else ".webp")
    save_image(np.zeros((32, 64, 3), np.uint8), root / "images" / f"{fid}.png")
    with pytest.raises(DataError) as e:
        cls(root=root, num_workers=0, subset="all").setup("test")
    line = _one_line(e)
    assert f"'{fid}' has two images" in line and f"{fid}.png" in line and "overwritten" in line
