"""Throughput and peak memory of the benchmark evaluator (SMIYC pixel + component metrics, float16 export).

Not a test. Synthetic frames (random anomaly ellipses + void bands, a "noisy version of the label" as score
map, see tests/benchmark_folders.py) at 2048x1024 are fed one by one to
``hazardseg.metrics.BenchmarkEvaluator``. Each configuration runs in a fresh subprocess, so the peak RSS
(``ru_maxrss``) is its own; "data" is the RSS after generating one frame (before the evaluator exists).
Frame generation is not timed. frames/s = frames / (time of all ``add`` calls + ``compute``).

    python bench/bench_smiyc_metrics.py                    # 50 frames, 2048x1024, ~5 min on 2 cores
    python bench/bench_smiyc_metrics.py --frames 5         # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CONFIGS = {
    "pixel + components": dict(submission=False, pooled=False),
    "+ pooled exact": dict(submission=False, pooled=True),
    "+ pooled + submission files": dict(submission=True, pooled=True),
}


def frame(index: int, height: int, width: int):
    import numpy as np

    from benchmark_folders import random_label, synthetic_scores

    rng = np.random.default_rng(index)
    label = random_label(rng, width, height, blobs=3)
    return label, synthetic_scores(label, index, noise=0.6)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(name: str, frames: int, height: int, width: int, threads: int) -> dict:
    import torch

    from hazardseg.metrics import BenchmarkEvaluator

    torch.set_num_threads(threads)
    frame(0, height, width)
    data_rss = rss_mib()
    with tempfile.TemporaryDirectory() as run_dir:
        evaluator = BenchmarkEvaluator(run_dir, "bench", "anomaly", **CONFIGS[name])
        add_times = []
        for i in range(frames):
            label, scores = frame(i, height, width)
            start = time.perf_counter()
            evaluator.add(f"frame{i:04d}", "AnomalyTrack-all", torch.from_numpy(scores), torch.from_numpy(label))
            add_times.append(time.perf_counter() - start)
        disk = sum(p.stat().st_size for p in Path(run_dir).rglob("*.hdf5")) / 2**20
        start = time.perf_counter()
        results = evaluator.compute()
        compute_s = time.perf_counter() - start
    total = sum(add_times) + compute_s
    return {
        "config": name, "frames": frames, "add_median_ms": 1e3 * statistics.median(add_times),
        "compute_s": compute_s, "frames_per_s": frames / total, "peak_rss_mib": rss_mib(), "data_rss_mib": data_rss,
        "disk_mib_before_compute": disk, "AP": results["AP"], "mean_F1": results["mean_F1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.frames, args.height, args.width, args.threads)))
        return
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads; {args.frames} frames at {args.width}x{args.height}")
    print("| configuration | frames | add() median ms | compute() s | frames/s | peak RSS MiB (data) | disk MiB |")
    print("|---|---|---|---|---|---|---|")
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(args.frames), "--height",
                              str(args.height), "--width", str(args.width), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['frames']} | {r['add_median_ms']:.0f} | {r['compute_s']:.1f} | {r['frames_per_s']:.2f} | "
              f"{r['peak_rss_mib']:.0f} ({r['data_rss_mib']:.0f}) | {r['disk_mib_before_compute']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
