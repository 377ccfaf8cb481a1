"""Reading one sample's files: RGB images of any mode, single-channel index masks, label-value checks,
and the skip-or-raise rule for unusable listed samples. Every dataset reader uses these."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hazardseg.errors import DataError, HazardsegError

INDEX_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class Item:
    image: Path
    mask: Path
    name: str  # relative path of the image, unique within the split


def check_inside(path: Path, folder: Path, listing: Path, entry: int | str, why: str) -> None:
    """Refuse a listed path that leaves ``folder`` (absolute elsewhere, or ``../``): one policy for every file
    list (StreetHazards odgt, the outlier manifest), lifted by ``data.allow_external_paths=true``. ``why`` says
    what could go wrong with such a file."""
    inside = os.path.abspath(folder)
    if os.path.commonpath([inside, os.path.abspath(path)]) != inside:
        raise DataError(
            f"{listing}: entry {entry} points outside {folder} ({path}); {why}. Fix: list files under {folder}, "
            f"or set data.allow_external_paths=true if intended"
        )


def skip_or_raise(message: str, key: str, skip: bool, missing: dict[str, str] | None) -> None:
    """A listed sample is unusable: raise DataError, or (``skip_bad_samples``) record it under ``key``."""
    if not skip:
        raise DataError(message)
    if missing is not None:
        missing[key] = message


def load_rgb(path: Path, hint: str = "") -> np.ndarray:
    """Decode an image file to (H,W,3) uint8 RGB; corrupt/truncated files raise DataError.

    16-bit grayscale images are scaled to 8 bits (PIL's ``convert("RGB")`` would clamp them to white)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_GRAY_MODES or (im.mode == "I" and im.format == "PNG"):  # PNG "I" = 16-bit gray
                return _gray16_to_rgb(np.array(im), path)
            if im.mode in ("I", "F"):
                raise DataError(f"{path}: {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (mode {im.mode}); "
                                f"its value range is unknown. Fix: convert it to an 8-bit RGB or 16-bit grayscale PNG")
            rgb = im.convert("RGB")
    except HazardsegError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found{hint}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, zlib.error, ValueError ...
        raise DataError(
            f"{path}: cannot decode image ({type(e).__name__}: {e}); re-download/re-extract it "
            f"or set data.skip_bad_samples=true to skip bad files"
        ) from None
    return np.array(rgb)


def _gray16_to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() > 65535:
        raise DataError(f"{path}: grayscale values outside 0..65535; Fix: convert it to an 8-bit RGB or 16-bit grayscale PNG")
    gray = ((arr + 128) // 257).astype(np.uint8)  # 0..65535 -> 0..255, rounded (65535 / 255 = 257)
    return np.repeat(gray[..., None], 3, axis=2)


def load_index_mask(path: Path, mask_hint: str = "", hint: str = "") -> np.ndarray:
    """Decode a single-channel label PNG to a 2-D integer array of its *indices*.

    Palette ('P') images are read by index (never converted to RGB). Colour (RGB/RGBA/...) masks raise.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode not in INDEX_MODES:
                raise DataError(
                    f"{path}: annotation is a {mode} colour image; an index/label-id PNG (mode L or P, one "
                    f"class id per pixel) is expected{mask_hint}"
                )
            arr = np.array(im)
    except HazardsegError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found{hint}") from None
    except Exception as e:
        raise DataError(
            f"{path}: cannot decode annotation ({type(e).__name__}: {e}); re-download/re-extract it "
            f"or set data.skip_bad_samples=true to skip bad files"
        ) from None
    if arr.ndim != 2:
        raise DataError(f"{path}: annotation has shape {arr.shape}; a single-channel label PNG is expected{mask_hint}")
    return arr


def check_values(arr: np.ndarray, allowed: np.ndarray | Sequence[int], path: Path, what: str) -> None:
    """Raise DataError naming ``path`` and the offending values when ``arr`` has values outside ``allowed``."""
    values = np.unique(arr)
    bad = np.setdiff1d(values, np.asarray(allowed))
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DataError(f"{path}: label values [{shown}] are outside {what}; is this the right annotation file/dataset?")
