"""Throughput and peak memory of the benchmark evaluator (SMIYC pixel + component metrics, float16 export).

Not a test. Synthetic frames (random anomaly ellipses + void bands, a "noisy version of the label" as score
map, see tests/benchmark_folders.py) at 2048x1024 are fed one by one to
``hazardseg.metrics.BenchmarkEvaluator``. Each configuration runs in a fresh subprocess, so the peak RSS
(``ru_maxrss``) is its own; "data" is the RSS after generating one frame (before the evaluator exists).
The subprocesses run with ``MALLOC_MMAP_THRESHOLD_=1048576`` (glibc): with its default dynamic threshold, freed
frame buffers stay in the heap and RSS creeps up with the frame count although nothing is retained.
Frame generation is not timed. frames/s = frames / (time of all ``add`` calls + ``compute``).

    python bench/bench_smiyc_metrics.py                    # 50 frames, 2048x1024, ~5 min on 2 cores
    python bench/bench_smiyc_metrics.py --frames 5         # quick
    python bench/bench_smiyc_metrics.py --stages --frames 10   # ms per step
    python bench/bench_smiyc_metrics.py --scorers 6 --frames 20   # one dataset, 6 scorers: ms per frame per scorer

``--scorers K``: K evaluators (K different score maps per frame, as K scorers give) on the same frames, in this
process: "separate" = each evaluator on its own, ``compute()`` one after the other (what the evaluation did
before labels and the component pass were shared; only API that older versions have, so the same command with
an older ``src`` on ``PYTHONPATH`` and ``--separate-only`` measures them), "shared" = the evaluators share one
``LabelledFrames`` and ``compute_all`` runs the component pass frame by frame (what ``BenchmarkEvaluation`` does).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
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
    scores = synthetic_scores(label, index, noise=0.6)
    gc.collect()  # the generator leaves reference cycles behind: keep them out of the evaluator's peak RSS
    return label, scores


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
        disk = sum(p.stat().st_size for p in Path(run_dir).rglob("*") if p.is_file()) / 2**20
        start = time.perf_counter()
        results = evaluator.compute()
        compute_s = time.perf_counter() - start
    total = sum(add_times) + compute_s
    return {
        "config": name, "frames": frames, "add_median_ms": 1e3 * statistics.median(add_times),
        "compute_s": compute_s, "frames_per_s": frames / total, "peak_rss_mib": rss_mib(), "data_rss_mib": data_rss,
        "disk_mib_before_compute": disk, "AP": results["AP"], "mean_F1": results["mean_F1"],
    }


def stages(frames: int, height: int, width: int, threads: int) -> None:
    """Median ms per 2048x1024 frame of each step the evaluator runs (in this process)."""
    import tempfile
    import zlib

    import numpy as np
    import torch

    from hazardseg.metrics import AnomalyMetrics, Float16Encoder, read_score_map, write_score_map
    from hazardseg.metrics.smiyc import COMPONENT_FILTERS, frame_bins, frame_components

    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {}
    pooled, encoder = AnomalyMetrics(), Float16Encoder()
    blob_sizes = []

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(1e3 * (time.perf_counter() - start))
        return out

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(frames):
            label, scores = frame(i, height, width)
            s = torch.from_numpy(scores)
            y = torch.from_numpy(label)
            m16 = timed("float16 encode (+ collapse check)", lambda: encoder.encode(s))
            bins = timed("SMIYC pixel bins", lambda: frame_bins(m16, label))
            timed("pooled exact update (AnomalyMetrics)", lambda: pooled.update(s, y == 1, y != 255))
            blob = timed("label zlib (kept in memory)", lambda: zlib.compress(label.tobytes(), 1))
            blob_sizes.append(len(blob))
            timed("scratch .npy write (ROI values)", lambda: np.save(f"{tmp}/m.npy", m16[label != 255]))
            timed("submission .hdf5 write (gzip 1 + shuffle)", lambda: write_score_map(f"{tmp}/m.hdf5", m16))
            timed("submission .hdf5 read", lambda: read_score_map(f"{tmp}/m.hdf5"))
            timed("components at the best-F1 threshold", lambda: frame_components(m16, label, 0.5, COMPONENT_FILTERS["anomaly"]))
            assert bins.thresholds.size <= 769
    print("| step | median ms / frame |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    print(f"label blob: median {statistics.median(blob_sizes) / 1024:.1f} KiB")


def scorers_mode(k: int, frames: int, height: int, width: int, threads: int, separate_only: bool) -> None:
    import numpy as np
    import torch

    from benchmark_folders import random_label, synthetic_scores
    from hazardseg.metrics import BenchmarkEvaluator

    torch.set_num_threads(threads)
    kinds = ["prob", "logit", "saturated"]
    data = []
    for i in range(frames):
        rng = np.random.default_rng(i)
        label = random_label(rng, width, height, blobs=3)
        maps = [torch.from_numpy(synthetic_scores(label, 100 * i + j, noise=0.4 + 0.1 * j, kind=kinds[j % 3]))
                for j in range(k)]
        data.append((torch.from_numpy(label), maps))
    variants = ["separate"] if separate_only else ["separate", "shared"]
    results = {}
    for variant in variants:
        with tempfile.TemporaryDirectory() as run_dir:
            if variant == "shared":
                from hazardseg.metrics.benchmark import LabelledFrames, as_uint8_label, compute_all

                store = LabelledFrames()
                evs = [BenchmarkEvaluator(run_dir, f"s{j}", "anomaly", pooled=False, frames=store) for j in range(k)]
            else:
                evs = [BenchmarkEvaluator(run_dir, f"s{j}", "anomaly", pooled=False) for j in range(k)]
            start = time.perf_counter()
            for i, (label, maps) in enumerate(data):
                if variant == "shared":
                    y = as_uint8_label(label)
                    index = store.add(y)
                    for ev, m in zip(evs, maps):
                        ev.add(f"f{i}", "AnomalyTrack-all", m, y, index)
                else:
                    for ev, m in zip(evs, maps):
                        ev.add(f"f{i}", "AnomalyTrack-all", m, label)
            added = time.perf_counter()
            out = compute_all(evs) if variant == "shared" else [ev.compute() for ev in evs]
            done = time.perf_counter()
        results[variant] = out
        per = 1e3 / (frames * k)
        print(f"| {variant} | {k} | {frames} | {(added - start) * per:.1f} | {(done - added) * per:.1f} | "
              f"{(done - start) * per:.1f} |", flush=True)
    if not separate_only:
        def same(a, b) -> bool:  # NaN (no component at that threshold) equals NaN
            return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

        diff = [(j, k) for j, (a, b) in enumerate(zip(results["separate"], results["shared"]))
                for k in a if not same(a[k], b.get(k))]
        print(f"\nshared == separate, every metric of every scorer (NaN == NaN): {not diff} {diff[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", action="store_true", help="time each step in this process instead")
    parser.add_argument("--scorers", type=int, help="K scorers on one dataset: separate vs shared evaluation")
    parser.add_argument("--separate-only", action="store_true", help="with --scorers: the API older versions have")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scorers:
        print(f"{args.scorers} scorers, {args.frames} frames at {args.width}x{args.height}, {args.threads} threads")
        print("| evaluation | scorers | frames | add ms / frame / scorer | compute ms / frame / scorer | total ms / frame / scorer |")
        print("|---|---|---|---|---|---|")
        scorers_mode(args.scorers, args.frames, args.height, args.width, args.threads, args.separate_only)
        return
    if args.stages:
        stages(args.frames, args.height, args.width, args.threads)
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.frames, args.height, args.width, args.threads)))
        return
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads; {args.frames} frames at {args.width}x{args.height}")
    print("| configuration | frames | add() median ms | compute() s | frames/s | peak RSS MiB (data) | disk MiB |")
    print("|---|---|---|---|---|---|---|")
    # glibc raises its mmap threshold after large frees, and the heap then keeps freed frame buffers: RSS
    # creeps up with the frame count although nothing is retained. A fixed threshold shows the real peak.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "1048576")}
    runs = [(name, args.frames) for name in CONFIGS] + [("pixel + components", max(1, args.frames // 5))]
    for name, frames in runs:  # the last run: fewer frames, same peak memory (the state does not grow with frames)
        out = subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(frames), "--height",
                              str(args.height), "--width", str(args.width), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, env=env)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['frames']} | {r['add_median_ms']:.0f} | {r['compute_s']:.1f} | {r['frames_per_s']:.2f} | "
              f"{r['peak_rss_mib']:.0f} ({r['data_rss_mib']:.0f}) | {r['disk_mib_before_compute']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
