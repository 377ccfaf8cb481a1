"""Every entry of the data error catalogue: type, one-line message naming the file/key and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hazardseg.data import (
    CityscapesDataModule,
    CityscapesDataset,
    PetDataModule,
    StreetHazardsDataModule,
    StreetHazardsDataset,
    SyntheticStreetHazardsDataModule,
    VOCDataModule,
    generate_streethazards,
    read_odgt,
)
from hazardseg.errors import ConfigError, DataError

TINY = dict(n_train=8, n_val=4, n_test=4, width=64, height=36, seed=0)
NO_AUG = {"scale": None, "crop": False, "hflip": False, "color_jitter": None}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return generate_streethazards(tmp_path_factory.mktemp("synth") / "sh", **TINY)


@pytest.fixture
def sh(pristine, tmp_path) -> Path:
    """A private, modifiable copy of the tiny synthetic StreetHazards."""
    return Path(shutil.copytree(pristine, tmp_path / "sh"))


def _dm(root: Path, **kw) -> StreetHazardsDataModule:
    return StreetHazardsDataModule(**{"root": root, "image_size": [36, 64], "batch_size": 4, "augment": NO_AUG, **kw})


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _first(root: Path, odgt: str = "test/test.odgt") -> dict:
    return read_odgt(root / odgt)[0]


# --- data root ---------------------------------------------------------------------------------
@pytest.mark.parametrize("root", [None, "/nonexistent/streethazards"])
def test_missing_root_says_where_to_download(root):
    dm = _dm(root)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    msg = _one_line(e)
    for part in ("https://github.com/hendrycks/anomaly-seg", "streethazards_train.tar", "streethazards_test.tar", "data.root="):
        assert part in msg, part
    if root:
        assert root in msg
    with pytest.raises(DataError):
        dm.setup("fit")


def test_root_without_splits_points_to_nested(sh, tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    shutil.move(str(sh), parent / "streethazards")
    with pytest.raises(DataError) as e:
        _dm(parent).setup("fit")
    msg = _one_line(e)
    assert "has no train/ or test/" in msg and f"data.root={parent / 'streethazards'}" in msg


def test_other_roots_missing():
    with pytest.raises(DataError, match=r"data.root=None.*leftImg8bit/ and gtFine/"):
        CityscapesDataModule(root=None).setup()
    with pytest.raises(DataError, match=r"data.root=/nope.*images/ and annotations/"):
        PetDataModule(root="/nope").setup()
    with pytest.raises(DataError, match=r"data.root=/nope.*VOCdevkit"):
        VOCDataModule(root="/nope").setup()


# --- empty split -------------------------------------------------------------------------------
def test_empty_split_odgt(sh):
    (sh / "train" / "validation.odgt").write_text("[]")
    with pytest.raises(DataError) as e:
        _dm(sh).setup("validate")
    msg = _one_line(e)
    assert "val split is empty" in msg and "validation.odgt" in msg


def test_empty_split_scan(sh):
    shutil.rmtree(sh / "test" / "images")
    (sh / "test" / "test.odgt").unlink()
    with pytest.raises(DataError) as e:
        _dm(sh, index="scan").setup("test")
    msg = _one_line(e)
    assert "test split is empty" in msg and str(sh / "test" / "images" / "test") in msg


# --- odgt pointing to a missing file -----------------------------------------------------------
@pytest.mark.parametrize("key", ["fpath_img", "fpath_segm"])
def test_odgt_entry_missing_file(sh, key):
    e0 = _first(sh)
    (sh / "test" / e0[key]).unlink()
    with pytest.raises(DataError) as e:
        _dm(sh).setup("test")
    msg = _one_line(e)
    assert str(sh / "test" / e0[key]) in msg and "test.odgt" in msg
    dm = _dm(sh, skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 1 missing"):
        dm.setup("test")
    assert len(dm.datasets["test"]) == 3 and list(dm.bad_samples) == [str(sh / "test" / e0["fpath_img"])]


def test_scan_image_without_annotation(sh):
    e0 = _first(sh)
    (sh / "test" / e0["fpath_segm"]).unlink()
    with pytest.raises(DataError) as e:
        StreetHazardsDataset(sh, "test", index="scan")
    msg = _one_line(e)
    assert str(sh / "test" / e0["fpath_img"]) in msg and str(sh / "test" / e0["fpath_segm"]) in msg


def test_odgt_json_lines_and_garbage(tmp_path):
    p = tmp_path / "x.odgt"
    p.write_text('{"fpath_img": "a.png", "fpath_segm": "b.png"}\n{"fpath_img": "c.png", "fpath_segm": "d.png"}\n')
    assert [e["fpath_img"] for e in read_odgt(p)] == ["a.png", "c.png"]
    p.write_text("not json")
    with pytest.raises(DataError, match=str(p)):
        read_odgt(p)


# --- corrupt / truncated PNG ---------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("key", ["fpath_img", "fpath_segm"])
def test_truncated_png_raises_naming_file(sh, key):
    bad = sh / "test" / _first(sh)[key]
    _truncate(bad)
    dm = _dm(sh)
    dm.setup("test")  # validated lazily
    with pytest.raises(DataError) as e:
        next(iter(dm.test_dataloader()))
    msg = _one_line(e)
    assert str(bad) in msg and "skip_bad_samples" in msg


def test_garbage_png_through_worker_keeps_one_line_message(sh):
    bad = sh / "test" / _first(sh)["fpath_img"]
    bad.write_bytes(b"this is not a png")
    dm = _dm(sh, num_workers=1)
    dm.setup("test")
    with pytest.raises(DataError) as e:
        list(dm.test_dataloader())
    msg = _one_line(e)
    assert msg.startswith(str(bad)) and "cannot decode image" in msg


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_bad_samples_drops_them(sh, num_workers):
    entries = read_odgt(sh / "test" / "test.odgt")
    bad_img = sh / "test" / entries[0]["fpath_img"]
    bad_seg = sh / "test" / entries[2]["fpath_segm"]
    _truncate(bad_img)
    _truncate(bad_seg)
    dm = _dm(sh, skip_bad_samples=True, num_workers=num_workers)
    dm.setup("test")
    with pytest.warns(UserWarning, match="skipping bad sample") if num_workers == 0 else _nullcontext():
        batches = list(dm.test_dataloader())
    names = [n for b in batches for n in b["name"]]
    assert all(set(b) == {"image", "mask", "name"} for b in batches)
    # dropped, not replaced by another image (which would be counted twice)
    assert names == [entries[i]["fpath_img"] for i in (1, 3)] and [len(b["image"]) for b in batches] == [2]
    assert set(dm.bad_samples) == {str(bad_img), str(sh / "test" / entries[2]["fpath_img"])}
    assert str(bad_seg) in dm.bad_samples[str(sh / "test" / entries[2]["fpath_img"])]


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_all_bad_raises(sh):
    for e in read_odgt(sh / "test" / "test.odgt"):
        _truncate(sh / "test" / e["fpath_img"])
    dm = _dm(sh, skip_bad_samples=True, batch_size=2)
    dm.setup("test")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="all 4 samples of this split are unreadable"):
        list(dm.test_dataloader())


# --- image/mask size mismatch --------------------------------------------------------------------
def test_size_mismatch_names_both_files(sh):
    e0 = _first(sh)
    seg = sh / "test" / e0["fpath_segm"]
    Image.open(seg).resize((32, 18), Image.NEAREST).save(seg)
    with pytest.raises(DataError) as e:
        StreetHazardsDataset(sh, "test")[0]
    msg = _one_line(e)
    assert str(sh / "test" / e0["fpath_img"]) in msg and str(seg) in msg and "64x36" in msg and "32x18" in msg


# --- label values out of range ----------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 15, 200])
def test_streethazards_raw_values_out_of_range(sh, value):
    seg = sh / "train" / _first(sh, "train/train.odgt")["fpath_segm"]
    arr = np.array(Image.open(seg))
    arr[3:5, 3:5] = value
    Image.fromarray(arr).save(seg)
    ds = StreetHazardsDataset(sh, "train")
    with pytest.raises(DataError) as e:
        ds[0]
    msg = _one_line(e)
    assert str(seg) in msg and f"[{value}]" in msg and "train range 1..13" in msg


@pytest.mark.parametrize("split,odgt", [("train", "train/train.odgt"), ("val", "train/validation.odgt")])
def test_anomaly_label_outside_test_is_a_data_error(sh, split, odgt):
    """The anomaly (raw 14) in a train/val annotation: one line naming the file, not a CE IndexError mid-fit."""
    seg = sh / odgt.split("/")[0] / _first(sh, odgt)["fpath_segm"]
    arr = np.array(Image.open(seg))
    arr[:] = 14  # only the anomaly value
    Image.fromarray(arr).save(seg)
    with pytest.raises(DataError) as e:
        StreetHazardsDataset(sh, split)[0]
    msg = _one_line(e)
    assert str(seg) in msg and "[14]" in msg and "test split only" in msg
    assert StreetHazardsDataset(sh, "test")[0]["mask"].max() <= 13  # the test split keeps its anomalies


def test_sixteen_bit_grayscale_is_scaled_not_white(tmp_path):
    from hazardseg.data.base import load_rgb

    ramp = (np.arange(36 * 64).reshape(36, 64) * 28).astype(np.uint16)  # 0 .. 64484
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = load_rgb(tmp_path / "g16.png")
    assert rgb.shape == (36, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[..., 0].astype(float), ramp / 257.0, atol=0.51)  # not clamped to 255
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match=r"floating-point image .*Fix: convert"):
        load_rgb(tmp_path / "f.tiff")


# --- odgt content ----------------------------------------------------------------------------------
def test_odgt_in_utf16_is_read_and_other_encodings_are_one_line(sh):
    odgt = sh / "test" / "test.odgt"
    entries = read_odgt(odgt)
    odgt.write_text(json.dumps(entries), encoding="utf-16")  # with BOM, as Windows tools write it
    assert read_odgt(odgt) == entries
    odgt.write_bytes(json.dumps(entries).replace("images/", "imágenes/").encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_odgt(odgt)
    assert _one_line(e).startswith(f"{odgt}: not UTF-8 text") and "Fix: save the index as UTF-8" in str(e.value)


@pytest.mark.parametrize("value", [None, 3, ""])
def test_odgt_entry_with_a_non_path(sh, value):
    odgt = sh / "test" / "test.odgt"
    entries = read_odgt(odgt)
    entries[1]["fpath_segm"] = value
    odgt.write_text(json.dumps(entries))
    with pytest.raises(DataError) as e:
        _dm(sh).setup("test")
    assert _one_line(e).startswith(f"{odgt}: entry 1 has fpath_segm={value!r}")


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_odgt_path_leaving_the_split_folder_is_refused(sh, how):
    """A test image listed in train.odgt is data leakage: refused unless data.allow_external_paths=true."""
    train_odgt = sh / "train" / "train.odgt"
    entries = read_odgt(train_odgt)
    leaked = _first(sh)
    for key in ("fpath_img", "fpath_segm"):
        entries[0][key] = f"../test/{leaked[key]}" if how == "relative" else str(sh / "test" / leaked[key])
    train_odgt.write_text(json.dumps(entries))
    with pytest.raises(DataError) as e:
        _dm(sh).setup("fit")
    msg = _one_line(e)
    assert msg.startswith(f"{train_odgt}: entry 0 points outside {sh / 'train'}") and "data.allow_external_paths=true" in msg
    dm = _dm(sh, allow_external_paths=True)
    dm.setup("fit")  # allowed now ...
    with pytest.raises(DataError) as e:  # ... but a training image in the test split is still leakage
        dm.setup("test")
    assert "1 image(s) of the test split are also training images" in _one_line(e)


# --- synthetic data is generated only at its default place ----------------------------------------
def test_synthetic_never_generates_into_a_missing_root(tmp_path):
    missing = tmp_path / "nonexistent" / "dir"
    dm = SyntheticStreetHazardsDataModule(root=missing, **TINY)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    msg = _one_line(e)
    assert msg.startswith(f"data.root={missing}: folder not found") and "drop data.root" in msg
    with pytest.raises(DataError):
        dm.setup("test")
    assert not (tmp_path / "nonexistent").exists()


def test_real_streethazards_folder_with_synthetic_selected(sh):
    (sh / "synthetic.json").unlink()  # now it looks like the real release
    with pytest.raises(DataError) as e:
        SyntheticStreetHazardsDataModule(root=sh, **TINY).prepare_data()
    msg = _one_line(e)
    assert "looks like a real StreetHazards folder" in msg and f"data=streethazards data.root={sh}" in msg
    assert "delete" not in msg


def test_unwritable_synthetic_cache_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("HAZARDSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        SyntheticStreetHazardsDataModule(**TINY).prepare_data()
    assert "HAZARDSEG_CACHE" in _one_line(e)


def test_corrupt_synthetic_marker_is_one_line(pristine, tmp_path):
    copy = Path(shutil.copytree(pristine, tmp_path / "copy"))
    (copy / "synthetic.json").write_text("{")
    with pytest.raises(DataError) as e:
        SyntheticStreetHazardsDataModule(root=copy, **TINY).prepare_data()
    assert _one_line(e).startswith(f"{copy / 'synthetic.json'}: corrupt") and f"delete {copy}" in str(e.value)


def _cityscapes(root: Path, ids: np.ndarray, suffix: str = "labelIds", mode: str = "L") -> Path:
    img = root / "leftImg8bit" / "val" / "x" / "x_000000_000001_leftImg8bit.png"
    seg = root / "gtFine" / "val" / "x" / f"x_000000_000001_gtFine_{suffix}.png"
    img.parent.mkdir(parents=True)
    seg.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(img)
    im = Image.fromarray(ids.astype(np.uint8))
    (im.convert(mode) if mode != "L" else im).save(seg)
    return seg


def test_cityscapes_label_id_out_of_range(tmp_path):
    ids = np.full((8, 16), 7, np.uint8)
    ids[0, :3] = [34, 40, 7]
    seg = _cityscapes(tmp_path, ids)
    with pytest.raises(DataError) as e:
        CityscapesDataset(tmp_path, "val")[0]
    msg = _one_line(e)
    assert str(seg) in msg and "[34, 40]" in msg and "0..33" in msg


def test_cityscapes_color_mask_rejected(tmp_path):
    seg = _cityscapes(tmp_path, np.full((8, 16), 7, np.uint8), suffix="labelIds", mode="RGB")
    with pytest.raises(DataError) as e:
        CityscapesDataset(tmp_path, "val")[0]
    msg = _one_line(e)
    assert str(seg) in msg and "RGB" in msg and "_gtFine_labelIds.png" in msg and "_color.png" in msg


def test_cityscapes_train_ids_out_of_range(tmp_path):
    seg = _cityscapes(tmp_path, np.full((8, 16), 19, np.uint8), suffix="labelTrainIds")
    with pytest.raises(DataError, match=r"\[19\]") as e:
        CityscapesDataset(tmp_path, "val", label_type="labelTrainIds")[0]
    assert str(seg) in _one_line(e)


def test_pet_trimap_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    for n, v in (("a", 1), ("b", 2), ("c", 4)):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "images" / f"{n}.jpg")
        Image.fromarray(np.full((6, 8), v, np.uint8)).save(tmp_path / "annotations" / "trimaps" / f"{n}.png")
    dm = PetDataModule(root=tmp_path, image_size=[6, 8], batch_size=3, val_fraction=0.0, test_fraction=0.0, augment=NO_AUG)
    ds = dm._get("train")  # all three in train (no val/test fractions)
    with pytest.raises(DataError) as e:
        ds[2]
    msg = _one_line(e)
    assert str(tmp_path / "annotations" / "trimaps" / "c.png") in msg and "[4]" in msg and "{1,2,3}" in msg
    (tmp_path / "annotations" / "trainval.txt").write_text("a 1 1 1\nzzz 1 1 1\n")
    with pytest.raises(DataError) as e:
        PetDataModule(root=tmp_path, val_fraction=0.0).setup("fit")
    msg = _one_line(e)
    assert str(tmp_path / "images" / "zzz.jpg") in msg and "trainval.txt" in msg


def test_voc_values_and_rgb_mask(tmp_path):
    from test_data import _write_voc  # noqa: PLC0415

    voc = _write_voc(tmp_path, bad_value=30)
    dm = VOCDataModule(root=tmp_path, image_size=[24, 32], batch_size=2, augment=NO_AUG)
    dm.setup("validate")
    with pytest.raises(DataError) as e:
        next(iter(dm.val_dataloader()))
    msg = _one_line(e)
    assert "SegmentationClass" in msg and "[30]" in msg
    seg = voc / "SegmentationClass" / "2007_000002.png"
    Image.open(seg).convert("RGB").save(seg)
    with pytest.raises(DataError) as e:
        dm.datasets["val"][0]
    msg = _one_line(e)
    assert str(seg) in msg and "RGB colour image" in msg and "index" in msg


def test_streethazards_rgb_annotation_rejected(sh):
    seg = sh / "test" / _first(sh)["fpath_segm"]
    Image.open(seg).convert("RGBA").save(seg)
    with pytest.raises(DataError) as e:
        StreetHazardsDataset(sh, "test")[0]
    msg = _one_line(e)
    assert str(seg) in msg and "RGBA" in msg and "index/label-id PNG" in msg


# --- config errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,key", [
    ({"num_classes": 14}, "data.num_classes"),
    ({"image_size": [36]}, "data.image_size"),
    ({"image_size": "big"}, "data.image_size"),
    ({"batch_size": 0}, "data.batch_size"),
    ({"augment": {"scale": [0.5, 2.0], "crop": True, "rotate": 10}}, "data.augment"),
    ({"augment": {"scale": [2.0, 0.5], "crop": True}}, "data.augment.scale"),
    ({"augment": {"scale": [0.5, 2.0], "crop": False}}, "data.augment.scale"),
    ({"augment": {"hflip": "yes"}}, "data.augment.hflip"),
    ({"augment": {"color_jitter": [0.3, 0.3]}}, "data.augment.color_jitter"),
    ({"index": "glob"}, "data.index"),
])  # fmt: skip
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as e:
        _dm("/x", **kwargs)
    assert key in _one_line(e)


def test_config_errors_other_datasets():
    with pytest.raises(ConfigError, match=r"data.num_classes=13 .* set data.num_classes=19"):
        CityscapesDataModule(num_classes=13)
    with pytest.raises(ConfigError, match=r"data.ignore_index=null .* set data.ignore_index=255"):
        CityscapesDataModule(ignore_index=None)
    with pytest.raises(ConfigError, match="data.label_type"):
        CityscapesDataModule(label_type="color")
    with pytest.raises(ConfigError, match="data.num_classes"):
        PetDataModule(num_classes=2)
    with pytest.raises(ConfigError, match="data.val_fraction"):
        PetDataModule(val_fraction=1.5)
    with pytest.raises(ConfigError, match="data.num_classes"):
        VOCDataModule(num_classes=20)
    with pytest.raises(ConfigError, match="data.n_train"):
        SyntheticStreetHazardsDataModule(n_train=0)


def test_synthetic_root_with_foreign_content(tmp_path, pristine):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    dm = SyntheticStreetHazardsDataModule(root=tmp_path / "junk", **TINY)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    assert str(tmp_path / "junk") in _one_line(e) and "data.root" in str(e.value)
    with pytest.raises(DataError, match="other parameters"):
        generate_streethazards(pristine, **{**TINY, "seed": 5})
