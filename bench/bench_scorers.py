"""Per-frame cost of each post-hoc scorer (and SML's parts) on a trained network's real logits.

    python bench/bench_scorers.py --ckpt outputs/models/<hash>/checkpoints/best.ckpt            # 2048x1024
    python bench/bench_scorers.py --ckpt ... --image-size 720,1280

The genuine StreetHazards test frame (a generated one when the samples are absent), resized to ``--image-size``,
through the checkpoint's network: its logits keep the memory layout the network gives them (SMP's networks give
channels-last logits on the CPU, which the scorers' reductions and this benchmark see as they are). SML's
statistics are fitted on that frame's own logits (timing only). Median of ``--repeats`` calls, in ms.

Max-logit, entropy and SML start from the frame's ``class_max`` (each pixel's max logit and class), computed once
per frame for all of them: it has a row of its own, and those scorers' rows are timed with it already computed, as
the second and later scorers of a frame see it; "every scorer, one frame" clears it before each call.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import SAMPLE, config  # noqa: E402  (the same Hydra composition as predict.py)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    from hazardseg.data.frames import FrameSource, collate_frames
    from hazardseg.maps import in_bands
    from hazardseg.run.build import eval_run
    from hazardseg.scorers import MSP, SML, Energy, Entropy, MaxLogit
    from hazardseg.scorers.base import _CLASS_MAX, class_max

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--image-size", default="1024,2048")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    h, w = (int(v) for v in args.image_size.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench_scorers_"))
    (work / "frames").mkdir()
    frame = Image.open(SAMPLE).convert("RGB") if SAMPLE.is_file() else Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    frame.save(work / "frames" / "frame.png")
    image = collate_frames([next(iter(FrameSource(work / "frames", (h, w))))])["image"]  # decoded, normalised as in predict.py
    net = eval_run(config(args.ckpt, work / "frames", work / "run", []), task="predict").module.net.eval()
    with torch.inference_mode():
        logits = net(image)["logits"]
        sml = SML().fit([{"logits": logits}])
        print(f"logits {tuple(logits.shape)}, strides {logits.stride()} "
              f"({'channels-last' if logits.stride(1) == 1 else 'contiguous planes'}), {torch.get_num_threads()} threads")
        scorers = (MSP(), MaxLogit(), Entropy(), Energy(), sml)

        def fresh_class_max():
            _CLASS_MAX.clear()
            return class_max(logits)

        def every_scorer():
            _CLASS_MAX.clear()
            return [s(logits) for s in scorers]

        rows = [("class_max (once per frame)", fresh_class_max)]
        rows += [(s.name, lambda s=s: s(logits)) for s in scorers]
        top, pred = class_max(logits)
        standardised = in_bands(lambda band, t, p: _standardise(t, p, sml), logits, top, pred)
        rows += [("sml: standardise", lambda: in_bands(lambda band, t, p: _standardise(t, p, sml), logits, top, pred)),
                 ("sml: boundary suppression", lambda: sml.suppress(standardised, pred)),
                 ("sml: dilated smoothing", lambda: sml.smooth(standardised)),
                 ("every scorer above, one frame", every_scorer)]
        print("| scorer | ms per frame |\n|---|---|")
        for name, fn in rows:
            fn()  # warm-up
            print(f"| {name} | {_median_ms(fn, args.repeats):.1f} |")


def _standardise(max_logit: torch.Tensor, pred: torch.Tensor, sml) -> torch.Tensor:
    return (max_logit - sml.class_mean[pred]) / sml.class_std[pred]


if __name__ == "__main__":
    main()
