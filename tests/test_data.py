"""Data layer: synthetic generator, StreetHazards loading, transforms, other datasets, stats.

Genuine sample files live in ``<repo>/../shared/samples`` (see SOURCES.md there).
"""

from __future__ import annotations

import inspect
import json
import multiprocessing as mp
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from hazardseg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CityscapesDataModule,
    CityscapesDataset,
    PetDataModule,
    StreetHazardsDataModule,
    StreetHazardsDataset,
    SyntheticStreetHazardsDataModule,
    VOCDataModule,
    build_train_transform,
    class_distribution,
    denormalize,
    format_distribution,
    generate_streethazards,
    label_ids_to_train_ids,
    read_odgt,
    split_distribution,
    voc_palette,
)
from hazardseg.data.base import load_index_mask
from hazardseg.errors import ConfigError
from hazardseg.data.cityscapes import LABELS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"genuine sample files not found at {SAMPLES}")

TINY = dict(n_train=8, n_val=4, n_test=4, width=64, height=36, seed=0)
NO_AUG = {"scale": None, "crop": False, "hflip": False, "color_jitter": None}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate_streethazards(tmp_path_factory.mktemp("synth") / "sh", **TINY)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dm(root: Path, **kw) -> SyntheticStreetHazardsDataModule:
    args = dict(root=root, **TINY, image_size=[36, 64], batch_size=4, num_workers=0, augment=NO_AUG)
    args.update(kw)
    return SyntheticStreetHazardsDataModule(**args)


# ---------------------------------------------------------------------------------------------
# synthetic generator
# ---------------------------------------------------------------------------------------------
def test_generator_deterministic(synth, tmp_path):
    again = generate_streethazards(tmp_path / "again", **TINY)
    a, b = _tree_bytes(synth), _tree_bytes(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]][:5]
    other = generate_streethazards(tmp_path / "other", **{**TINY, "seed": 1})
    c = _tree_bytes(other)
    assert c.keys() == a.keys()
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == sum(k.endswith(".png") for k in a)  # every image/annotation differs


def test_generator_format_fidelity(synth):
    layout = {
        ("train", "train.odgt"): ("images/training/t1-3/", TINY["n_train"]),
        ("train", "validation.odgt"): ("images/validation/t4/", TINY["n_val"]),
        ("test", "test.odgt"): ("images/test/", TINY["n_test"]),
    }
    for (split_dir, odgt), (prefix, n) in layout.items():
        path = synth / split_dir / odgt
        raw = path.read_text()
        assert raw.startswith("[") and not raw.endswith("\n") and "\n" not in raw  # one JSON array on one line
        with open(path) as f:
            entries = json.load(f)
        assert len(entries) == n
        assert [e["fpath_img"] for e in entries] == sorted(e["fpath_img"] for e in entries)
        has_anomaly = False
        for e in entries:
            assert set(e) == {"dbName", "width", "height", "fpath_img", "fpath_segm"}
            assert e["dbName"] == "StreetHazards" and (e["width"], e["height"]) == (64, 36)
            assert e["fpath_img"].startswith(prefix)
            assert e["fpath_segm"] == "annotations/" + e["fpath_img"][len("images/") :]
            img = Image.open(synth / split_dir / e["fpath_img"])
            seg = Image.open(synth / split_dir / e["fpath_segm"])
            assert img.format == "PNG" and img.mode == "RGBA" and img.size == (64, 36)
            assert (np.asarray(img)[..., 3] == 255).all()
            assert seg.mode == "L" and seg.size == (64, 36)
            vals = np.unique(np.asarray(seg))
            assert vals.min() >= 1 and vals.max() <= 14, vals
            if split_dir == "train":
                assert 14 not in vals, e["fpath_img"]
            has_anomaly |= 14 in vals
        assert has_anomaly == (split_dir == "test")
    test_imgs = [e["fpath_img"] for e in read_odgt(synth / "test" / "test.odgt")]
    assert any("/t5/" in p for p in test_imgs) and any("/t6/" in p for p in test_imgs)


def test_generator_scenes_use_all_known_classes(synth):
    seen = set()
    for p in (synth / "train" / "annotations").rglob("*.png"):
        seen |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert seen == set(range(1, 14)), sorted(seen)  # all 13 known classes appear in train, no anomaly


def _gen_worker(root: str) -> str:
    return str(generate_streethazards(root, **TINY))


def test_generator_concurrent_processes(synth, tmp_path):
    target = tmp_path / "shared"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        out = pool.map(_gen_worker, [str(target)] * 2)
    assert out == [str(target.absolute())] * 2
    assert _tree_bytes(target) == _tree_bytes(synth)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # temp dirs cleaned up


def test_synthetic_datamodule_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HAZARDSEG_CACHE", str(tmp_path / "cache"))
    dm = SyntheticStreetHazardsDataModule(root=None, **TINY, image_size=[36, 64], batch_size=2, augment=NO_AUG)
    assert dm.root.parent == tmp_path / "cache" and dm.root.name.startswith("synthetic_streethazards-v")
    dm.setup("test")  # generates lazily when prepare_data was not called
    assert (dm.root / "synthetic.json").is_file() and len(dm.datasets["test"]) == TINY["n_test"]
    dm2 = SyntheticStreetHazardsDataModule(root=None, **{**TINY, "seed": 3})
    assert dm2.root != dm.root  # parameters hash into the folder name


# ---------------------------------------------------------------------------------------------
# datamodule batches
# ---------------------------------------------------------------------------------------------
def test_datamodule_attributes_and_batches(synth):
    dm = _dm(synth)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("fit")  # tolerant of repeated calls
    dm.setup("test")
    assert (dm.num_classes, dm.ignore_index, dm.anomaly_index) == (13, None, 13)
    assert len(dm.class_names) == 13 and dm.class_names[7] == "road" and dm.class_names[12] == "traffic sign"
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 8, "val": 4, "test": 4}

    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"image", "mask", "name"}
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 3, 36, 64)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (4, 36, 64)
    assert type(batch["image"]) is torch.Tensor and type(batch["mask"]) is torch.Tensor
    entries = read_odgt(synth / "test" / "test.odgt")
    assert batch["name"] == [e["fpath_img"] for e in entries]
    # image_size == native size: the batch must be exactly the normalized file pixels and raw labels - 1
    for i, e in enumerate(entries):
        rgb = np.asarray(Image.open(synth / "test" / e["fpath_img"]).convert("RGB"), np.float32) / 255
        expect = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        assert torch.allclose(batch["image"][i], expect, atol=1e-5)
        raw = np.asarray(Image.open(synth / "test" / e["fpath_segm"])).astype(np.int64)
        assert torch.equal(batch["mask"][i], torch.from_numpy(raw - 1))
    assert int((torch.cat([b["mask"] for b in dm.test_dataloader()]) == 13).sum()) > 0
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert int(torch.cat([b["mask"] for b in loader]).max()) <= 12  # anomaly only in test


def test_eval_image_size_sets_val_and_test_size_only(synth):
    """Training crops at image_size, val/test images and masks at eval_image_size: here the generated size,
    so test masks are the files' labels (no resampling) while the training batches stay small."""
    dm = _dm(synth, image_size=[24, 40], eval_image_size=[36, 64], augment={"scale": [0.75, 1.5], "crop": True})
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 24, 40)
    assert next(iter(dm.val_dataloader()))["mask"].shape == (4, 36, 64)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (4, 3, 36, 64)
    entries = read_odgt(synth / "test" / "test.odgt")
    for i, e in enumerate(entries):
        raw = np.asarray(Image.open(synth / "test" / e["fpath_segm"])).astype(np.int64)
        assert torch.equal(batch["mask"][i], torch.from_numpy(raw - 1))
    assert dm.fingerprint("fit") != _dm(synth, image_size=[24, 40]).fingerprint("fit")  # scorer-stat caches follow it
    assert next(iter(_dm(synth, image_size=[24, 40]).test_dataloader()))["mask"].shape == (4, 24, 40)  # null: image_size
    with pytest.raises(ConfigError, match=r"data.eval_image_size"):
        _dm(synth, eval_image_size=[36])


def test_dataloader_modes(synth):
    dm = _dm(synth, image_size=[18, 32], batch_size=3, augment={"scale": [0.5, 2.0], "crop": True, "hflip": True, "color_jitter": [0.3, 0.3, 0.3]})
    dm.setup("fit")
    train = dm.train_dataloader()
    assert train.drop_last and len(train) == 2  # 8 samples, batch 3
    names_a = [n for b in train for n in b["name"]]
    train.sampler.set_epoch(1)  # what Lightning does before every epoch
    names_b = [n for b in train for n in b["name"]]
    assert names_a != names_b  # reshuffled every epoch
    assert all(b["image"].shape[-2:] == (18, 32) for b in dm.train_dataloader())
    fit = list(dm.fit_dataloader())
    fit_names = [n for b in fit for n in b["name"]]
    assert fit_names == [e["fpath_img"] for e in read_odgt(synth / "train" / "train.odgt")]  # train split, not shuffled, no drop
    fit2 = list(dm.fit_dataloader())
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) for a, b in zip(fit, fit2))  # no augmentation
    assert not dm.val_dataloader().drop_last


def test_dataloader_with_workers(synth):
    dm = _dm(synth, num_workers=2, persistent_workers=True)
    dm.setup("test")
    names = [n for b in dm.test_dataloader() for n in b["name"]]
    assert names == [e["fpath_img"] for e in read_odgt(synth / "test" / "test.odgt")]


def _epochs(dm, epochs=(0, 1)) -> list[list[torch.Tensor]]:
    loader = dm.train_dataloader()
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)  # what Lightning does before every epoch
        out.append([t for b in loader for t in (b["image"], b["mask"])])
    return out


def test_training_batches_do_not_depend_on_workers_or_global_rng(synth):
    """Augmentation is a function of (train_seed, epoch, index): same batches with 0 or 2 persistent
    workers, whatever the global RNG holds, and the global RNG is not consumed."""
    aug = {"scale": [0.5, 2.0], "crop": True, "hflip": True, "color_jitter": [0.3, 0.3, 0.3]}
    dm0 = _dm(synth, augment=aug, train_seed=3)
    dm0.setup("fit")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    reference = _epochs(dm0)
    assert torch.equal(torch.get_rng_state(), state)
    assert not all(torch.equal(a, b) for a, b in zip(*reference))  # a new epoch, new augmentations
    dm2 = _dm(synth, augment=aug, train_seed=3, num_workers=2, persistent_workers=True)
    dm2.setup("fit")
    torch.manual_seed(1)
    for ref, got in zip(reference, _epochs(dm2)):
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
    resumed = _epochs(dm2, epochs=(1,))[0]  # a fresh loader starting at epoch 1 (a resume)
    assert all(torch.equal(a, b) for a, b in zip(reference[1], resumed))
    other = _dm(synth, augment=aug, train_seed=4)
    other.setup("fit")
    assert not all(torch.equal(a, b) for a, b in zip(reference[0], _epochs(other, (0,))[0]))


def test_ddp_ranks_share_one_permutation_and_augmentation(synth):
    """Under DDP each rank takes its share of the (seed, epoch) permutation; a sample's augmentation is
    the same whichever rank loads it."""
    from hazardseg.data.sampling import EpochSampler

    aug = {"scale": [0.5, 2.0], "crop": True, "hflip": True, "color_jitter": [0.3, 0.3, 0.3]}
    dm = _dm(synth, augment=aug, train_seed=3)
    dm.setup("fit")
    ds = dm.dataset("train", train_transform=True)
    single = list(EpochSampler(ds, 3))
    ranks = [list(EpochSampler(ds, 3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(single) == sorted(ranks[0] + ranks[1])
    key = ranks[1][0]
    assert torch.equal(ds[key]["image"], ds[single[single.index(key)]]["image"])


def test_train_seed_is_validated(synth):
    with pytest.raises(ConfigError, match="data.train_seed"):
        _dm(synth, train_seed=-1)


def test_scan_index_equals_odgt(synth):
    for split in ("train", "val", "test"):
        a = StreetHazardsDataset(synth, split, index="odgt")
        b = StreetHazardsDataset(synth, split, index="scan")
        assert a.index == "odgt" and b.index == "scan"
        key = lambda it: it.name  # noqa: E731
        assert sorted(a.items, key=key) == sorted(b.items, key=key)
        assert len(a) == {"train": 8, "val": 4, "test": 4}[split]


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
def _label_image(seed: int) -> dict:
    """Blocky labels 0..12 with the image encoding the label (R = 18*label, G = B = 0)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 13, (6, 10), generator=g)
    mask = small.repeat_interleave(16, 0).repeat_interleave(16, 1)  # 96x160
    img = torch.zeros(3, 96, 160, dtype=torch.uint8)
    img[0] = (mask * 18).to(torch.uint8)
    return {"image": tv_tensors.Image(img), "mask": tv_tensors.Mask(mask), "name": "x"}


@pytest.mark.parametrize("augment", [
    {"scale": [0.5, 2.0], "crop": True, "hflip": True, "color_jitter": None},
    {"scale": None, "crop": True, "hflip": True, "color_jitter": None},
])  # fmt: skip
def test_augmentations_keep_image_and_mask_aligned(augment):
    tf = build_train_transform([96, 160], augment, ignore_index=255)
    torch.manual_seed(0)
    agree, flipped_agree, padded = [], [], 0
    for seed in range(24):
        out = tf(_label_image(seed))
        img, mask = out["image"], out["mask"]
        assert img.shape == (3, 96, 160) and mask.shape == (96, 160) and mask.dtype == torch.int64
        decoded = torch.round(denormalize(img)[0] * 255 / 18).long()
        valid = mask != 255
        padded += int((~valid).sum())
        # compare away from label borders (resampling blends the image there and torch's "nearest" mask
        # resize is up to half an input pixel off bilinear): 5x5-uniform mask pixels
        mf = mask[None, None].float()
        interior = (F.max_pool2d(mf, 5, 1, 2) == -F.max_pool2d(-mf, 5, 1, 2))[0, 0] & valid
        interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False  # crop frame
        assert interior.float().mean() > 0.03
        agree.append((decoded[interior] == mask[interior]).float().mean().item())
        fm = mask.flip(-1)
        fv = interior & (fm != 255)
        flipped_agree.append((decoded[fv] == fm[fv]).float().mean().item())
    assert min(agree) > 0.99, agree
    assert np.mean(flipped_agree) < 0.5  # a misaligned mask would be caught
    if augment["scale"]:
        assert padded > 0  # scale < 1 happened and the mask was padded with ignore_index
        assert set(torch.unique(tf(_label_image(0))["mask"]).tolist()) <= set(range(13)) | {255}


def test_color_jitter_touches_only_image():
    tf = build_train_transform([96, 160], {"scale": None, "crop": False, "hflip": False, "color_jitter": [0.5, 0.5, 0.5]}, None)
    plain = build_train_transform([96, 160], NO_AUG, None)
    s = _label_image(3)
    s["image"] = tv_tensors.Image(torch.randint(0, 255, (3, 96, 160), dtype=torch.uint8))
    torch.manual_seed(0)
    a, b = tf(dict(s)), plain(dict(s))
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["mask"], s["mask"].long())
    assert not torch.allclose(a["image"], b["image"])


def test_hflip_flips_both():
    tf = build_train_transform([96, 160], {"scale": None, "crop": False, "hflip": True, "color_jitter": None}, None)
    s = _label_image(5)
    ref = build_train_transform([96, 160], NO_AUG, None)(dict(s))
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = tf(dict(s))
        flipped = torch.equal(out["mask"], ref["mask"].flip(-1))
        seen.add(flipped)
        assert torch.equal(out["image"], ref["image"].flip(-1) if flipped else ref["image"])
        assert flipped or torch.equal(out["mask"], ref["mask"])
    assert seen == {True, False}


# ---------------------------------------------------------------------------------------------
# genuine StreetHazards samples
# ---------------------------------------------------------------------------------------------
@needs_samples
def test_genuine_odgt_files_parse():
    sh = SAMPLES / "streethazards"
    counts = {"test/test.odgt": 1500, "train/train.odgt": 5125, "train/validation.odgt": 1031}
    for rel, n in counts.items():
        entries = read_odgt(sh / rel)
        with open(sh / rel) as f:
            assert json.load(f) == entries
        assert len(entries) == n
        assert all(e["width"] == 1280 and e["height"] == 720 and e["dbName"] == "StreetHazards" for e in entries)
    test = read_odgt(sh / "test/test.odgt")
    assert test[0]["fpath_img"] == "images/test/t5/1.png"
    assert {"fpath_img": "images/test/t6/1028.png", "fpath_segm": "annotations/test/t6/1028.png"}.items() <= next(
        e for e in test if e["fpath_img"].endswith("t6/1028.png")
    ).items()


@needs_samples
def test_genuine_test_image_through_dataset(tmp_path):
    sh = SAMPLES / "streethazards"
    assert Image.open(sh / "test/images/test/t6/1028.png").mode == "RGBA"
    entries = [e for e in read_odgt(sh / "test/test.odgt") if e["fpath_img"] == "images/test/t6/1028.png"]
    assert len(entries) == 1
    odgt = tmp_path / "one.odgt"
    odgt.write_text(json.dumps(entries))
    for ds in (StreetHazardsDataset(sh, "test", odgt=odgt), StreetHazardsDataset(sh, "test", index="scan")):
        assert len(ds) == 1 and ds.items[0].name == "images/test/t6/1028.png"
        s = ds[0]
        assert s["image"].shape == (3, 720, 1280) and s["image"].dtype == torch.uint8
        assert s["mask"].shape == (720, 1280) and s["mask"].dtype == torch.int64
        assert set(torch.unique(s["mask"]).tolist()) == {0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13}
        assert int((s["mask"] == 13).sum()) == 2886
        rgba = np.asarray(Image.open(sh / "test/images/test/t6/1028.png"))
        assert torch.equal(s["image"], torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1))
    # through the datamodule, resized to image_size with nearest masks
    dm = StreetHazardsDataModule(root=sh, image_size=[360, 640], batch_size=1, augment=NO_AUG)
    dm.datasets["test"] = StreetHazardsDataset(sh, "test", odgt=odgt)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 3, 360, 640) and batch["name"] == ["images/test/t6/1028.png"]
    assert set(torch.unique(batch["mask"]).tolist()) <= {0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13}
    assert 13 in batch["mask"]


@needs_samples
@pytest.mark.parametrize("rel,raw", [
    ("test/annotations/test/t5/300.png", [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14]),
    ("train/annotations/training/t1-3/1.png", [1, 2, 3, 6, 7, 8, 9, 10, 12, 13]),
    ("train/annotations/validation/t4/1.png", [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]),
])  # fmt: skip
def test_genuine_annotations_decode(rel, raw):
    path = SAMPLES / "streethazards" / rel
    arr = load_index_mask(path)
    assert arr.shape == (720, 1280)
    assert np.unique(arr).tolist() == raw
    split = "test" if rel.startswith("test/") else ("val" if "/validation/" in rel else "train")
    enc = StreetHazardsDataset.encode_mask(SimpleNamespace(split=split), arr, path)  # encode_mask reads only the split
    assert np.unique(enc).tolist() == [v - 1 for v in raw]


@needs_samples
def test_genuine_odgt_missing_file_is_named():
    from hazardseg.errors import DataError

    sh = SAMPLES / "streethazards"
    with pytest.raises(DataError) as ei:
        StreetHazardsDataset(sh, "test", index="odgt")
    msg = str(ei.value)
    assert "images/test/t5/1.png" in msg and "test.odgt" in msg and "\n" not in msg
    with pytest.warns(UserWarning, match="skipped 1499 missing"):
        ds = StreetHazardsDataset(sh, "test", index="odgt", skip_bad_samples=True)  # skip: only t6/1028 remains
    assert [it.name for it in ds.items] == ["images/test/t6/1028.png"] and len(ds.bad_samples) == 1499


# ---------------------------------------------------------------------------------------------
# Cityscapes, Pet, VOC
# ---------------------------------------------------------------------------------------------
def test_cityscapes_table_is_official():
    assert len(LABELS) == 34 and sorted(t for _, _, t in LABELS if t != 255) == list(range(19))
    lut = {lid: tid for _, lid, tid in LABELS}
    assert (lut[7], lut[8], lut[11], lut[24], lut[26], lut[33], lut[0], lut[9]) == (0, 1, 2, 11, 13, 18, 255, 255)
    assert CityscapesDataModule.CLASS_NAMES[:3] == ("road", "sidewalk", "building") and CityscapesDataModule.CLASS_NAMES[18] == "bicycle"


@needs_samples
def test_cityscapes_genuine_sample():
    cs = SAMPLES / "cityscapes"
    gt = cs / "gtFine/val/frankfurt"
    ids = np.asarray(Image.open(gt / "frankfurt_000000_000294_gtFine_labelIds.png"))
    train_ids = np.asarray(Image.open(gt / "frankfurt_000000_000294_gtFine_labelTrainIds.png")).astype(np.int64)
    mapped = label_ids_to_train_ids(ids)
    # MMSegmentation shrank both files independently (2048x1024 -> 256x128), so 77 of 32768 pixels, all on
    # label borders, disagree. Everywhere else the official table must reproduce the trainIds file exactly,
    # and for every labelId present the table's trainId is what the trainIds file says (majority vote).
    diff = mapped != train_ids
    assert int(diff.sum()) == 77
    pad = np.pad(mapped, 1, mode="edge")
    neigh = np.stack([pad[1 + dy : 129 + dy, 1 + dx : 257 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    assert ((neigh == train_ids[None]).any(0) | ~diff)[diff].sum() >= 0.9 * diff.sum()  # border pixels
    for lid in np.unique(ids):
        vals, cnt = np.unique(train_ids[ids == lid], return_counts=True)
        assert vals[cnt.argmax()] == mapped[ids == lid][0], lid
    a = CityscapesDataset(cs, "val", label_type="labelIds")[0]
    b = CityscapesDataset(cs, "val", label_type="labelTrainIds")[0]
    assert a["name"] == "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert a["image"].shape == (3, 128, 256) and torch.equal(a["mask"], torch.from_numpy(mapped))
    assert torch.equal(b["mask"], torch.from_numpy(train_ids)) and int((a["mask"] != b["mask"]).sum()) == 77
    assert set(torch.unique(a["mask"]).tolist()) == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
    dm = CityscapesDataModule(root=cs, image_size=[64, 128], batch_size=1, augment=NO_AUG)
    assert (dm.num_classes, dm.ignore_index, dm.anomaly_index) == (19, 255, None)
    dm.setup("test")  # test split -> val (no public test labels)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 3, 64, 128) and batch["mask"].shape == (1, 64, 128)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
    # a non-default ignore_index remaps the void value
    dm2 = CityscapesDataModule(root=cs, image_size=[128, 256], batch_size=1, augment=NO_AUG, ignore_index=-1)
    dm2.setup("validate")
    m = next(iter(dm2.val_dataloader()))["mask"][0]
    assert int((m == -1).sum()) == int((a["mask"] == 255).sum()) > 0 and 255 not in m


@needs_samples
def test_pet_genuine_samples():
    pet = SAMPLES / "oxford_iiit_pet"
    dm = PetDataModule(root=pet, image_size=[64, 64], batch_size=1, augment=NO_AUG, val_fraction=0.4, test_fraction=0.0)
    assert (dm.num_classes, dm.ignore_index, dm.class_names) == (3, None, ["pet", "background", "border"])
    dm.setup("fit")
    names = sorted(dm.datasets["train"].items[0:1] + dm.datasets["val"].items[0:1], key=lambda it: it.name)
    assert [it.name for it in names] == ["images/Abyssinian_1.jpg", "images/american_bulldog_100.jpg"]
    for split in ("train", "val"):
        ds = dm.datasets[split]
        s = ds.load_raw(0)
        pil = Image.open(ds.items[0].image)
        assert pil.mode == "RGB" and s["image"].shape == (3, pil.height, pil.width)
        raw = np.asarray(Image.open(ds.items[0].mask))
        assert np.unique(raw).tolist() == [1, 2, 3]
        assert torch.equal(s["mask"], torch.from_numpy(raw.astype(np.int64) - 1))
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (1, 3, 64, 64) and set(torch.unique(b["mask"]).tolist()) <= {0, 1, 2}


def _write_pet(root: Path, names: list[str]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert("CMYK").save(root / "images" / f"{n}.jpg")
        Image.fromarray(rng.integers(1, 4, (20, 30), dtype=np.uint8)).save(root / "annotations" / "trimaps" / f"{n}.png")


def test_pet_split_files_and_scan(tmp_path):
    names = [f"cat_{i}" for i in range(10)]
    _write_pet(tmp_path, names)
    dm = PetDataModule(root=tmp_path, image_size=[16, 16], batch_size=2, augment=NO_AUG, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    got = {k: sorted(it.name for it in v.items) for k, v in dm.datasets.items()}
    assert sum(len(v) for v in got.values()) == 10 and (len(got["val"]), len(got["test"])) == (2, 2)
    dm_again = PetDataModule(root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    dm_again.setup()
    assert {k: sorted(it.name for it in v.items) for k, v in dm_again.datasets.items()} == got  # deterministic
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 16, 16)  # CMYK "jpg" -> RGB
    (tmp_path / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in names[:6]))
    (tmp_path / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in names[6:]))
    dm = PetDataModule(root=tmp_path, val_fraction=0.5)
    dm.setup()
    assert sorted(it.name for it in dm.datasets["test"].items) == [f"images/{n}.jpg" for n in names[6:]]
    assert len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 3


def _write_voc(root: Path, n: int = 4, bad_value: int | None = None) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = {}
    for i in range(n):
        name = f"2007_{i:06d}"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        m = rng.integers(0, 21, (24, 32), dtype=np.uint8)
        m[0, :] = 255
        if bad_value is not None:
            m[1, 1] = bad_value
        p = Image.fromarray(m, mode="P") if False else Image.fromarray(m).convert("P")
        p = Image.frombytes("P", (32, 24), m.tobytes())
        p.putpalette(voc_palette())
        p.save(voc / "SegmentationClass" / f"{name}.png")
        masks[name] = m
    names = sorted(masks)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[: n // 2]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[n // 2 :]) + "\n")
    return voc


def test_voc_palette_masks_read_by_index(tmp_path):
    voc = _write_voc(tmp_path)
    name = "2007_000003"
    pil = Image.open(voc / "SegmentationClass" / f"{name}.png")
    assert pil.mode == "P"
    idx = np.asarray(pil)
    assert np.asarray(pil.convert("RGB"))[5, 5].tolist() == voc_palette()[3 * idx[5, 5] : 3 * idx[5, 5] + 3]
    dm = VOCDataModule(root=tmp_path, image_size=[24, 32], batch_size=2, augment=NO_AUG)
    assert (dm.num_classes, dm.ignore_index, len(dm.class_names)) == (21, 255, 21)
    dm.setup()
    assert [it.name for it in dm.datasets["test"].items] == [it.name for it in dm.datasets["val"].items]  # val as test
    b = next(iter(dm.test_dataloader()))
    assert b["name"] == ["JPEGImages/2007_000002.jpg", "JPEGImages/2007_000003.jpg"]
    assert torch.equal(b["mask"][1], torch.from_numpy(idx.astype(np.int64)))  # indices incl. 255, not RGB
    assert int((b["mask"] == 255).sum()) == 2 * 32


# ---------------------------------------------------------------------------------------------
# class distribution + configs
# ---------------------------------------------------------------------------------------------
def test_class_distribution(synth):
    dm = _dm(synth)
    dm.setup()
    rep = split_distribution(dm)
    for split, (folder, odgt) in {"train": ("train", "train.odgt"), "val": ("train", "validation.odgt"), "test": ("test", "test.odgt")}.items():
        raw = np.concatenate([np.asarray(Image.open(synth / folder / e["fpath_segm"])).ravel() for e in read_odgt(synth / folder / odgt)])
        expect = np.bincount(raw.astype(np.int64) - 1, minlength=14)
        r = rep[split]
        assert r["counts"] == expect[:13].tolist()
        assert r["anomaly"]["count"] == int(expect[13])
        assert r["total"] == raw.size and abs(sum(r["fractions"]) + r["anomaly"]["fraction"] - 1) < 1e-9
        assert r["per_class"]["road"]["count"] == expect[7]
    assert rep["train"]["anomaly"]["count"] == 0 and rep["test"]["anomaly"]["count"] > 0
    via_loader = class_distribution(dm.test_dataloader(), 13)  # image_size == native -> identical counts
    assert via_loader["counts"] == rep["test"]["counts"] and via_loader["extra"][13]["count"] == rep["test"]["anomaly"]["count"]
    ign = class_distribution(dm.dataset("train"), 13, ignore_index=0)
    assert ign["counts"][0] == 0 and ign["ignored"] == rep["train"]["counts"][0]
    table = format_distribution(rep)
    assert "traffic sign" in table and "anomaly (13)" in table


def constructor_params(cls) -> set[str]:
    """Keyword arguments a datamodule accepts, following ``**common`` up the class hierarchy."""
    params: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__).parameters.values()
        params |= {p.name for p in sig if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in sig):
            break
    return params


@pytest.mark.parametrize("name", ["synthetic", "streethazards", "cityscapes", "pet", "voc"])
def test_yaml_configs_match_constructors(name, tmp_path, monkeypatch, make_cfg):
    import hydra.utils

    monkeypatch.setenv("HAZARDSEG_CACHE", str(tmp_path))
    cfg = make_cfg([f"data={name}", "seed=7"]).data  # composed: the data/outliers group is merged into data.outliers
    assert cfg.outliers.enabled is False and cfg.val_outliers.enabled is False
    assert cfg.train_seed == 7  # the top-level seed
    cls = hydra.utils.get_class(cfg._target_)
    assert set(cfg) - {"_target_"} == constructor_params(cls)
    for key in ("num_classes", "ignore_index", "root", "augment", "image_size"):
        assert key in cfg
    dm = hydra.utils.instantiate(cfg)
    assert dm.num_classes == cfg.num_classes and dm.ignore_index == cfg.ignore_index
    assert dm.image_size == tuple(cfg.image_size)
    if name == "synthetic":
        # generated 16:9 like the release; evaluated at that size (the label files' own pixels)
        assert cfg.width * 9 == cfg.height * 16
        assert dm.eval_image_size == (cfg.height, cfg.width)
