"""Evaluation memory of a mask-classification network's outputs on a 1024x2048 frame with 100 queries.

Not a test. Times and measures the peak resident memory (a fresh process per variant, ru_maxrss) of
turning Mask2Former's query outputs (100 queries, 19 + 1 classes, masks at stride 4: 256x512) into what
evaluation reads: the semantic scores ``s`` at input size (``logits``) and the RbA / Mask2Anomaly / EAM maps.

- ``chunked``: hazardseg (``hazardseg.models.outputs``: 8 queries at input size at a time);
- ``one tensor``: the (Q, H, W) float32 masks upsampled at once, as Mask2Former's semantic_inference does.

    python bench/bench_query_memory.py            # ~1 min on 2 cores
    python bench/bench_query_memory.py --network  # + the whole Swin-B Mask2Former forward pass at 1024x2048 (~1 min)

``--network`` also runs ``model=mask2former_swin_b`` (random init, 19 classes) on one 1024x2048 frame in
evaluation mode: time and peak memory above the built model, the network and ``logits`` included.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

Q, K, H, W = 100, 19, 1024, 2048


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(variant: str) -> dict:
    from hazardseg.models.outputs import semantic_scores
    from hazardseg.scorers.mask_classification import EAM, Mask2Anomaly, RbA

    gen = torch.Generator().manual_seed(0)
    cls, masks = torch.randn(1, Q, K + 1, generator=gen), torch.randn(1, Q, H // 4, W // 4, generator=gen)
    before = rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        if variant == "chunked":
            s = semantic_scores(cls, masks, (H, W), K)
        else:
            up = torch.nn.functional.interpolate(masks, size=(H, W), mode="bilinear", align_corners=False).sigmoid()
            s = torch.einsum("nqc,nqhw->nchw", cls.softmax(-1)[..., :K], up)
            del up
        outputs = {"logits": s, "class_logits": cls, "mask_logits": masks}
        maps = [scorer(outputs) for scorer in (RbA(), Mask2Anomaly(), EAM())]
    seconds = time.perf_counter() - t0
    assert all(m.shape == (1, H, W) for m in maps)
    return {"variant": variant, "seconds": seconds, "peak_mb_above_inputs": rss_mb() - before}


def network() -> dict:
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=mask2former_swin_b", "data=cityscapes"])
    net = instantiate(cfg.model).eval()
    before = rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = net(torch.randn(1, 3, H, W))
    assert out["logits"].shape == (1, K, H, W) and out["mask_logits"].shape == (1, Q, H // 4, W // 4)
    return {"seconds": time.perf_counter() - t0, "peak_mb_above_model": rss_mb() - before, "model_mb": before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", choices=["chunked", "one tensor", "network"])
    p.add_argument("--network", action="store_true", help="also the Swin-B Mask2Former forward pass")
    a = p.parse_args()
    if a.one:
        print(json.dumps(network() if a.one == "network" else one(a.one)))
        return
    rows: dict[str, list[dict]] = {"chunked": [], "one tensor": []}
    for _ in range(a.rounds):
        for variant in rows:
            out = subprocess.run([sys.executable, __file__, "--one", variant], capture_output=True, text=True, check=True)
            rows[variant].append(json.loads(out.stdout))
    print(f"1 x {Q} queries, {K} classes, masks {H // 4}x{W // 4} -> {H}x{W}; s + RbA + Mask2Anomaly + EAM maps; "
          f"median of {a.rounds} fresh processes\n")
    print("| variant | s | peak memory above the inputs (MB) |")
    print("|---|---|---|")
    for variant, values in rows.items():
        print(f"| {variant} | {statistics.median(v['seconds'] for v in values):.2f} | "
              f"{statistics.median(v['peak_mb_above_inputs'] for v in values):.0f} |")
    if a.network:
        out = subprocess.run([sys.executable, __file__, "--one", "network"], capture_output=True, text=True, check=True)
        net = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\nmodel=mask2former_swin_b forward, 1 x 3 x {H} x {W}, eval mode: {net['seconds']:.1f} s, peak memory "
              f"{net['peak_mb_above_model']:.0f} MB above the built model ({net['model_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
