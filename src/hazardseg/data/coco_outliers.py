"""Build a folder of RGBA outlier cut-outs from COCO instance annotations (for ``data/outliers=folder``).

    python -m hazardseg.data.coco_outliers --coco-root /data/coco --annotations instances_train2017.json \\
        --out /data/coco_outliers_streethazards --exclude streethazards [--min-area 1024] [--max-objects N]

Conventions, following the two public references:

* **Excluded categories, image level.** Every image that contains an instance of a category overlapping
  the target dataset's classes is dropped entirely, as Meta-OoD does (Chan et al., ICCV 2021,
  ``robin-chan/meta-ood`` ``preparation/prepare_coco_segmentation.py``: ``exclude_classes`` ->
  ``getImgIds(catIds=...)`` -> skip those images) and pytorch-ood's ``InsertCOCO._init_ids``. Crowd
  annotations count for this too. Lists (``EXCLUDE_PRESETS``):

  - ``cityscapes``: Meta-OoD's list verbatim: person, bicycle, car, motorcycle, bus, truck, traffic
    light, stop sign (COCO classes that are Cityscapes classes). Meta-OoD keeps COCO "train", although
    Cityscapes has a train class; add ``--exclude train`` to drop it too.
  - ``streethazards``: the union of (a) the same eight in-distribution overlaps (StreetHazards'
    pedestrian, car (CARLA "vehicles": cars, trucks, buses, motorbikes, bicycles) and traffic-sign
    classes) and (b) pytorch-ood's ``InsertCOCO._class_exclusion["Streethazards"]`` (traffic light,
    stop sign, vase, refrigerator, sink, toaster, oven, dining table, chair, tennis racket;
    ``kkirchheim/pytorch-ood`` ``src/pytorch_ood/utils/transforms.py``, since commit d8ed6e8, v0.2.0), so
    a model trained on these cut-outs is comparable with pytorch-ood's StreetHazards + COCO example.
    pytorch-ood's list alone would keep COCO persons and cars, which StreetHazards labels as classes.
  - any other value: comma-separated COCO category names; ``--exclude`` may be repeated.

* **Image size.** Images smaller than ``--min-image-size`` (480 px on both sides) are skipped, as both
  references do (``COCO.min_image_size = 480``; ``InsertCOCO(min_img_size=480)``).
* **Crowd (``iscrowd=1``, RLE) annotations are kept** by default, as Meta-OoD keeps them
  (``getAnnIds(iscrowd=None)`` + ``annToMask``: its outlier masks include crowd regions); they are
  decoded from uncompressed or compressed RLE. ``--skip-crowd`` drops them (their boundaries are coarse).
* **Objects.** One RGBA PNG per instance, cropped to the decoded mask's box, alpha = mask (255 / 0),
  colour 0 outside the mask, named ``<image_id:012d>_<annotation_id>.png``; instances whose decoded
  area is below ``--min-area`` (default 32^2 = 1024 px, COCO's small/medium boundary: smaller ones are
  blurry when pasted larger) are skipped; neither reference filters objects by size, they paste whole
  annotated images or random instances. ``--max-side`` downscales larger cut-outs (premultiplied alpha).
* Polygons are rasterised with PIL (no pycocotools dependency), like pytorch-ood's COCO helper.

Output: ``<out>/*.png`` and ``<out>/manifest.json`` (written atomically, last: a folder with a
manifest is complete): the options, the excluded categories, and one entry per object with its file,
source image id, annotation id, category id and name, mask area (px, before ``--max-side``), box and
crowd flag.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hazardseg.errors import ConfigError, DataError, HazardsegError
from hazardseg.io import atomic_path, atomic_write_json

# COCO categories that are (parts of) the in-distribution classes of Cityscapes-like road scenes.
META_OOD_CITYSCAPES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign")
PYTORCH_OOD_STREETHAZARDS = (
    "traffic light", "stop sign", "vase", "refrigerator", "sink", "toaster", "oven", "dining table", "chair", "tennis racket",
)  # fmt: skip
EXCLUDE_PRESETS: dict[str, tuple[str, ...]] = {
    "cityscapes": META_OOD_CITYSCAPES,
    "streethazards": tuple(dict.fromkeys(META_OOD_CITYSCAPES + PYTORCH_OOD_STREETHAZARDS)),
    "none": (),
}
MIN_IMAGE_SIZE = 480
MIN_AREA = 32 * 32


# ------------------------------------------------------------------------------ mask decoding
def rle_counts_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``: 5-bit groups offset by 48, a
    continuation bit 0x20, sign bit 0x10 on the last group; counts after the second are deltas)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(rle: dict[str, Any], height: int, width: int) -> np.ndarray:
    """COCO RLE (``counts`` list or compressed string; column-major runs starting with zeros) -> (h,w) bool."""
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = rle_counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
    h, w = (int(v) for v in rle.get("size", (height, width)))
    if (h, w) != (height, width) or sum(counts) != h * w:
        raise DataError(f"RLE of size {rle.get('size')} with {sum(counts)} pixels does not match the image ({height}x{width})")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T  # column-major (Fortran) order


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1, outline=1)
    return np.asarray(im, bool)


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        return rle_to_mask(seg, height, width)
    if isinstance(seg, list):
        return polygons_to_mask(seg, height, width)
    raise DataError(f"annotation {ann.get('id')}: unsupported segmentation {type(seg).__name__}")


# -------------------------------------------------------------------------------- selection
def resolve_exclusions(specs: Sequence[str], categories: dict[int, str]) -> tuple[list[str], set[int]]:
    """``--exclude`` values -> (names, category ids). Preset names absent from this JSON are ignored (a
    subset of COCO); explicitly named categories must exist."""
    by_name = {name: cid for cid, name in categories.items()}
    names: list[str] = []
    for spec in specs:
        if spec.lower() in EXCLUDE_PRESETS:
            names += [n for n in EXCLUDE_PRESETS[spec.lower()] if n in by_name]
            continue
        for name in (n.strip() for n in spec.split(",") if n.strip()):
            if name not in by_name:
                raise ConfigError(
                    f"--exclude {name!r}: no such category in the annotations; use one of the presets "
                    f"{sorted(EXCLUDE_PRESETS)} or COCO category names (e.g. 'train,boat')"
                )
            names.append(name)
    names = list(dict.fromkeys(names))
    return names, {by_name[n] for n in names}


def _load_annotations(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found; pass --annotations /path/to/instances_train2017.json") from None
    except ValueError as e:
        raise DataError(f"{path}: not a valid COCO annotation JSON ({e})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and 'categories')")
    _check_integer_fields(data, path)
    return data


# The integer fields the tool reads, per list of the instances file.
INTEGER_FIELDS = {"categories": ("id",), "images": ("id", "height", "width"),
                  "annotations": ("id", "image_id", "category_id")}


def _check_integer_fields(data: dict[str, Any], path: Path) -> None:
    """Every id / size the tool reads is an integer (JSON ints, or floats with an integral value): one line naming the
    entry otherwise, instead of a ValueError traceback half-way through writing the cut-outs."""
    for section, keys in INTEGER_FIELDS.items():
        entries = data[section]
        if not isinstance(entries, list):
            raise DataError(f"{path}: '{section}' must be a list of objects, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            for key in keys:
                value = entry.get(key) if isinstance(entry, dict) else None
                ok = isinstance(value, int) and not isinstance(value, bool)
                ok = ok or (isinstance(value, float) and value.is_integer())
                if not ok:
                    raise DataError(f"{path}: {section}[{i}].{key}={value!r} is not an integer; a COCO instances file "
                                    f"has integer ids and sizes (fix or drop that entry)")


def _resolve_paths(coco_root: Path, annotations: str, images: str | None) -> tuple[Path, Path]:
    ann = Path(annotations).expanduser()
    if not ann.is_absolute() and not ann.exists():
        ann = coco_root / "annotations" / ann
    if images is not None:
        img_dir = Path(images).expanduser()
    else:  # instances_train2017.json -> <coco-root>/train2017
        m = re.match(r"instances_(\w+)\.json$", ann.name)
        img_dir = coco_root / (m.group(1) if m else "images")
    return ann, img_dir


def build_outlier_folder(
    coco_root: str | Path,
    annotations: str,
    out: str | Path,
    exclude: Sequence[str] = ("none",),
    images: str | None = None,
    min_area: int = MIN_AREA,
    min_image_size: int = MIN_IMAGE_SIZE,
    max_objects: int | None = None,
    max_side: int | None = 512,
    skip_crowd: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Write the cut-outs and ``manifest.json`` into ``out``; returns the manifest."""
    coco_root, out = Path(coco_root).expanduser(), Path(out).expanduser()
    ann_path, img_dir = _resolve_paths(coco_root, annotations, images)
    data = _load_annotations(ann_path)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: COCO image folder not found; pass --images /path/to/train2017")
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    excluded_names, excluded_ids = resolve_exclusions(exclude, categories)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[int(ann["image_id"])].append(ann)
    dropped = {i for i, anns in by_image.items() if any(int(a["category_id"]) in excluded_ids for a in anns)}
    out.mkdir(parents=True, exist_ok=True)
    objects: list[dict[str, Any]] = []
    stats = {"images": 0, "images_excluded": 0, "images_too_small": 0, "crowd_skipped": 0, "too_small": 0}
    started = time.time()
    for info in sorted(data["images"], key=lambda i: int(i["id"])):
        if max_objects is not None and len(objects) >= max_objects:
            break
        image_id, h, w = int(info["id"]), int(info["height"]), int(info["width"])
        anns = sorted(by_image.get(image_id, ()), key=lambda a: int(a["id"]))
        if image_id in dropped:
            stats["images_excluded"] += 1
            continue
        if min(h, w) < min_image_size:
            stats["images_too_small"] += 1
            continue
        if not anns:
            continue
        stats["images"] += 1
        rgb = None
        for ann in anns:
            if max_objects is not None and len(objects) >= max_objects:
                break
            crowd = bool(ann.get("iscrowd", 0))
            if crowd and skip_crowd:
                stats["crowd_skipped"] += 1
                continue
            mask = annotation_mask(ann, h, w)
            area = int(mask.sum())
            if area < max(min_area, 1):
                stats["too_small"] += 1
                continue
            if rgb is None:
                rgb = _load_image(img_dir / info["file_name"], h, w)
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            m = mask[y0:y1, x0:x1]
            rgba = np.dstack([rgb[y0:y1, x0:x1] * m[..., None], m.astype(np.uint8) * 255])
            name = f"{image_id:012d}_{int(ann['id'])}.png"
            _save_cutout(rgba, out / name, max_side)
            cid = int(ann["category_id"])
            objects.append({
                "file": name, "image_id": image_id, "annotation_id": int(ann["id"]), "category_id": cid,
                "category": categories.get(cid, str(cid)), "area": area,
                "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)], "iscrowd": int(crowd),
            })  # fmt: skip
        if stats["images"] % 1000 == 0 and stats["images"]:
            log(f"{stats['images']} images, {len(objects)} objects ({time.time() - started:.0f} s)")
    manifest = {
        "source": ann_path.name,
        "exclude": list(exclude),
        "excluded_categories": excluded_names,
        "min_area": min_area,
        "min_image_size": min_image_size,
        "max_side": max_side,
        "crowd": "skipped" if skip_crowd else "kept",
        "stats": stats,
        "objects": objects,
    }
    atomic_write_json(out / "manifest.json", manifest)
    log(f"{len(objects)} cut-outs from {stats['images']} images in {out} ({stats['images_excluded']} images excluded "
        f"for {excluded_names or 'no categories'}, {stats['images_too_small']} too small, {stats['too_small']} objects "
        f"< {min_area} px, {stats['crowd_skipped']} crowd skipped)")  # fmt: skip
    return manifest


def _load_image(path: Path, h: int, w: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: COCO image not found; pass --images /path/to/the/image/folder") from None
    except Exception as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e}); re-download it") from None
    if rgb.shape[:2] != (h, w):
        raise DataError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]} but the annotations say {w}x{h}; wrong --images folder?")
    return rgb


def _save_cutout(rgba: np.ndarray, path: Path, max_side: int | None) -> None:
    im = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    if max_side and max(im.size) > max_side:
        f = max_side / max(im.size)
        size = (max(1, round(im.width * f)), max(1, round(im.height * f)))
        im = im.convert("RGBa").resize(size, Image.LANCZOS).convert("RGBA")  # premultiplied: no dark fringes
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", compress_level=3)


# ---------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hazardseg.data.coco_outliers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--coco-root", required=True, help="COCO folder (holds annotations/ and train2017/)")
    ap.add_argument("--annotations", required=True, help="instances JSON: a path, or a name under <coco-root>/annotations/")
    ap.add_argument("--images", default=None, help="image folder (default: <coco-root>/<split> from the JSON name)")
    ap.add_argument("--out", required=True, help="output folder for the cut-outs and manifest.json")
    ap.add_argument("--exclude", action="append", default=None,
                    help=f"preset {sorted(EXCLUDE_PRESETS)} or comma-separated COCO category names; repeatable")  # fmt: skip
    ap.add_argument("--min-area", type=int, default=MIN_AREA, help="minimum object area in px (default 1024 = 32^2)")
    ap.add_argument("--min-image-size", type=int, default=MIN_IMAGE_SIZE, help="minimum image height and width (default 480)")
    ap.add_argument("--max-objects", type=int, default=None, help="stop after this many cut-outs")
    ap.add_argument("--max-side", type=int, default=512, help="downscale cut-outs whose longer side exceeds this (0: never)")
    ap.add_argument("--skip-crowd", action="store_true", help="drop iscrowd annotations (kept by default, like Meta-OoD)")
    args = ap.parse_args(argv)
    if not args.exclude:
        ap.error("--exclude is required: streethazards, cityscapes, none, or COCO category names")
    try:
        build_outlier_folder(
            args.coco_root, args.annotations, args.out, exclude=args.exclude, images=args.images, min_area=args.min_area,
            min_image_size=args.min_image_size, max_objects=args.max_objects, max_side=args.max_side or None,
            skip_crowd=args.skip_crowd,
        )  # fmt: skip
    except HazardsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
