"""Per-sample cost of outlier pasting in the TRAIN transform (not a test).

Runs single-threaded, like a DataLoader worker (``SegmentationDataset.__getitem__`` also sets one
thread), on uint8 synthetic road scenes, with the training augmentation of ``conf/data/synthetic.yaml``
(scale 0.75-1.5, crop, hflip, colour jitter 0.3) and the default ``data.outliers`` options (probability
0.5, 1-3 objects, height 8-35% of the image, on road / sidewalk, alpha blending). Every variant sees the
same samples with the same torch seeds, alternating sample by sample, timed in process CPU time
(the box is shared: wall time would measure the neighbours), so differences are side by side.

    python bench/bench_outliers.py                  # 144x256 and 360x640, ~1-2 min on 2 busy cores
    python bench/bench_outliers.py --samples 100 --repeats 3

Variants: no outliers; synthetic source "cold" (cache off: every object rendered) and "warm" (a bank
of 512 objects, all cached, as the default 2048-object bank is after its first epochs); folder source
(RGBA PNG cut-outs of ~180x140 px, like COCO objects after ``--max-side``) "cold" (cache off: every object decoded) and "warm" (all cached). Reported: median CPU ms
per sample over the repeats, the increment over "no outliers", and the cost of rendering one
synthetic object / decoding one cut-out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from hazardseg.data.outlier_synth import render_outlier
from hazardseg.data.outliers import FolderOutliers, PasteOutliers, SyntheticOutliers
from hazardseg.data.synthetic import render_scene
from hazardseg.data.transforms import build_train_transform

AUGMENT = {"scale": [0.75, 1.5], "crop": True, "hflip": True, "color_jitter": [0.3, 0.3, 0.3]}
PASTE = {"probability": 0.5, "count": (1, 3), "scale": (0.08, 0.35), "on_labels": [7, 8], "blend": "alpha"}


def scenes(n: int, width: int, height: int) -> list[dict]:
    out = []
    for i in range(n):
        rgb, lab = render_scene(np.random.default_rng([0, 0, i]), width, height, anomalies=False)
        out.append({
            "image": tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1).contiguous()),
            "mask": tv_tensors.Mask(torch.from_numpy(lab.astype(np.int64) - 1)),
            "name": str(i),
        })  # fmt: skip
    return out


def cutout_folder(root: Path, n: int) -> Path:
    """n RGBA PNGs of ~180x140 px: synthetic objects upscaled, a stand-in for COCO cut-outs."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgba, _ = render_outlier(1, i, 64)
        im = Image.fromarray(rgba, "RGBA")
        f = 180 / max(im.size)
        im.resize((round(im.width * f), round(im.height * f)), Image.BILINEAR).save(root / f"{i:05d}.png", compress_level=3)
    return root


def time_variants(transforms: dict, samples: list[dict], seed0: int) -> dict[str, float]:
    """ms of process CPU time per sample for each variant; variants alternate sample by sample (same seed)
    so that load from other processes hits them alike (CPU time, not wall time: the box is shared)."""
    total = dict.fromkeys(transforms, 0)
    for i, s in enumerate(samples):
        for name, t in transforms.items():
            torch.default_generator.manual_seed(seed0 + i)  # torch.manual_seed also seeds lazy devices: ~0.5 ms
            start = time.process_time_ns()
            t(s)
            total[name] += time.process_time_ns() - start
    return {name: ns / len(samples) / 1e6 for name, ns in total.items()}


def run(size: tuple[int, int], samples: list[dict], repeats: int, folder: Path) -> None:
    warm_synth = SyntheticOutliers(seed=0, num_objects=512, cache_size=512)
    for i in range(len(warm_synth)):
        warm_synth[i]
    warm_folder = FolderOutliers(folder, cache_size=100_000)
    for i in range(len(warm_folder)):
        warm_folder[i]
    sources = {
        "no outliers": None,
        "synthetic, cold (render every object)": SyntheticOutliers(seed=0, num_objects=2048, cache_size=0),
        "synthetic, warm (bank cached)": warm_synth,
        "folder, cold (decode every PNG)": FolderOutliers(folder, cache_size=0),
        "folder, warm (all cached)": warm_folder,
    }
    transforms = {
        name: build_train_transform(size, AUGMENT, None, None if src is None else PasteOutliers(src, **PASTE))
        for name, src in sources.items()
    }
    times: dict[str, list[float]] = {name: [] for name in transforms}
    for r in range(repeats):
        for name, ms in time_variants(transforms, samples, seed0=1000 * r).items():
            times[name].append(ms)
    base = statistics.median(times["no outliers"])
    print(f"\n{size[0]}x{size[1]}, {len(samples)} samples x {repeats} repeats, 1 thread; median CPU ms / sample")
    print("| variant | ms / sample | + vs no outliers |\n|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {med - base:+.2f} |")


def object_costs(folder: Path, n: int = 200) -> None:
    start = time.process_time()
    for i in range(n):
        render_outlier(0, 50_000 + i, 64)
    render = (time.process_time() - start) / n * 1e3
    src = FolderOutliers(folder, cache_size=0)
    start = time.process_time()
    for i in range(min(n, len(src))):
        src[i]
    decode = (time.process_time() - start) / min(n, len(src)) * 1e3
    print(f"\nrender one synthetic object (size 64): {render:.2f} ms; decode one ~180x140 RGBA cut-out: {decode:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=160, help="samples per repeat (an epoch of the synthetic data)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = cutout_folder(Path(tmp) / "cutouts", 300)
        object_costs(folder)
        small = scenes(min(args.samples, 40), 320, 180)
        run((144, 256), (small * (args.samples // len(small) + 1))[: args.samples], args.repeats, folder)
        big = scenes(8, 1280 // 2, 720 // 2)
        run((360, 640), (big * (args.samples // 4 // len(big) + 1))[: max(args.samples // 4, 8)], args.repeats, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
