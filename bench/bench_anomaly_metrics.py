"""Benchmark hazardseg.metrics.AnomalyMetrics against sklearn, torchmetrics and pytorch-ood.

Not a test. Every method runs in a fresh subprocess on the same pixels (saved once to a temp
file), so peak RSS (``ru_maxrss``) is per method. Throughput = pixels / median wall time of
``update`` (in image-sized chunks of 921,600 pixels) + ``compute`` for all three metrics.

    python bench/bench_anomaly_metrics.py                      # defaults, ~10 min on 2 cores
    python bench/bench_anomaly_metrics.py --pixels 2e6 --big-pixels 1e8 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CHUNK = 921_600  # one StreetHazards image (1280 x 720)
KEYS = ("aupr", "auroc", "fpr95")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_scores(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MSP scores (-max softmax of 19 random logits; anomalies flatter), ~1% anomalies."""
    gen = torch.Generator().manual_seed(seed)
    scores, labels = torch.empty(n), torch.empty(n, dtype=torch.bool)
    for start in range(0, n, 1_000_000):  # chunked: the logits would need 76 B/pixel
        m = min(1_000_000, n - start)
        y = torch.rand(m, generator=gen) < 0.01
        logits = torch.randn(m, 19, generator=gen) * torch.where(y, 2.0, 5.0)[:, None]
        scores[start : start + m] = -logits.softmax(1).amax(1)
        labels[start : start + m] = y
    return scores, labels


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- methods (run in a worker)
def run_hazardseg(s: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    from hazardseg.metrics import AnomalyMetrics

    metric = AnomalyMetrics()
    for cs, cy in zip(s.split(CHUNK), y.split(CHUNK)):
        metric.update(cs, cy)
    return metric.compute()


def run_sklearn(s: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score
    from test_anomaly_metrics import fpr95_reference  # the numpy reference the tests use

    sn, yn = s.numpy(), y.numpy()
    return {
        "aupr": average_precision_score(yn, sn),
        "auroc": roc_auc_score(yn, sn),
        "fpr95": fpr95_reference(yn, sn),
    }


def _fpr95_from_roc(fpr: torch.Tensor, tpr: torch.Tensor) -> float:
    """Hendrycks' cutoff on a ROC curve given in descending-threshold order (first point 0,0)."""
    fpr, tpr = fpr[1:].double(), tpr[1:].double()
    last = int(torch.nonzero(tpr >= 1.0)[0])
    dist = (tpr[: last + 1] - 0.95).abs()
    return float(fpr[int(torch.nonzero(dist == dist.min()).max())])


def _run_torchmetrics(s: torch.Tensor, y: torch.Tensor, thresholds: int | None) -> dict[str, float]:
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryROC

    # torchmetrics applies a sigmoid to scores outside [0, 1]; 1 - MSP is inside, same order
    metrics = [m(thresholds=thresholds) for m in (BinaryAveragePrecision, BinaryAUROC, BinaryROC)]
    for cs, cy in zip(s.split(CHUNK), y.split(CHUNK)):
        cs, cy = cs + 1.0, cy.long()
        for m in metrics:
            m.update(cs, cy)
    fpr, tpr, _ = metrics[2].compute()
    return {"aupr": float(metrics[0].compute()), "auroc": float(metrics[1].compute()),
            "fpr95": _fpr95_from_roc(fpr, tpr)}


def run_tm_exact(s: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return _run_torchmetrics(s, y, None)


def run_tm_binned(s: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return _run_torchmetrics(s, y, 10_000)


def run_pytorch_ood(s: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    from pytorch_ood.metrics import OODMetrics

    metric = OODMetrics()
    for cs, cy in zip(s.split(CHUNK), y.split(CHUNK)):
        metric.update(cs, torch.where(cy, -1, 0))  # OOD = label < 0
    out = metric.compute()
    return {"aupr": out["AUPR-OUT"], "auroc": out["AUROC"], "fpr95": out["FPR95TPR"]}


METHODS = {
    "hazardseg AnomalyMetrics": run_hazardseg,
    "sklearn (+ numpy FPR95 ref)": run_sklearn,
    "torchmetrics exact": run_tm_exact,
    "torchmetrics binned (10k thr)": run_tm_binned,
    "pytorch-ood OODMetrics": run_pytorch_ood,
}


def worker(method: str, data: str, pixels: int, repeats: int) -> None:
    s, y = torch.load(data)
    s, y = s[:pixels].clone(), y[:pixels].clone()
    y[:1000:10] = True  # the warm-up slice needs both classes
    METHODS[method](s[:1000], y[:1000])  # warm-up: imports and lazy initialisation
    base_rss = max_rss_mib()
    times, values = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        values = METHODS[method](s, y)
        times.append(time.perf_counter() - t0)
    peak_rss = max_rss_mib()  # before the sklearn reference below adds its own peak
    ref = run_sklearn(s, y) if method != "sklearn (+ numpy FPR95 ref)" else values
    print(json.dumps({
        "pixels": pixels, "seconds": statistics.median(times), "peak_rss_mib": peak_rss,
        "data_rss_mib": base_rss, "values": {k: float(values[k]) for k in KEYS},
        "diff": {k: abs(float(values[k]) - float(ref[k])) for k in KEYS},
    }))


def big_worker(pixels: int) -> None:
    """Stream ``pixels`` MSP scores through AnomalyMetrics; chunks drawn from a fixed pool."""
    from hazardseg.metrics import AnomalyMetrics

    pool_s, pool_y = make_scores(20 * CHUNK, seed=1)
    gen = torch.Generator().manual_seed(2)
    metric, done, t0 = AnomalyMetrics(), 0, time.perf_counter()
    while done < pixels:
        m = min(4 * CHUNK, pixels - done)  # 4 images per batch
        start = int(torch.randint(0, pool_s.numel() - m + 1, (1,), generator=gen))
        metric.update(pool_s[start : start + m], pool_y[start : start + m])
        done += m
    values = metric.compute()
    seconds = time.perf_counter() - t0
    print(json.dumps({"pixels": pixels, "seconds": seconds, "peak_rss_mib": max_rss_mib(),
                      "values": values}))


# ---------------------------------------------------------------- driver
def spawn(args: list[str], timeout: float) -> dict | str:
    cmd = [sys.executable, __file__, *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(out.stdout.strip().splitlines()[-1])


def pytorch_ood_problem() -> str | None:
    try:
        from pytorch_ood.metrics import OODMetrics  # noqa: F401
    except Exception as exc:  # not installed / incompatible with this torch
        return f"pytorch-ood unavailable ({type(exc).__name__}: {exc})"
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", type=float, default=2e7, help="pixels for the side-by-side run")
    p.add_argument("--binned-pixels", type=float, default=2e5, help="pixels for torchmetrics binned (slow)")
    p.add_argument("--big-pixels", type=float, default=1.4e9, help="pixels for the streaming run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=240, help="per method, seconds")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--big-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.data, int(a.pixels), a.repeats)
    if a.big_worker:
        return big_worker(int(a.big_pixels))

    n = int(a.pixels)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"MSP scores of 19-class random logits, {n:.2e} pixels, ~1% anomalies\n")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "scores.pt")
        torch.save(make_scores(n), data)
        rows = []
        for method in METHODS:
            pixels = min(n, int(a.binned_pixels)) if "binned" in method else n
            repeats = 1 if method != "hazardseg AnomalyMetrics" and pixels >= 1e7 else a.repeats
            if method == "hazardseg AnomalyMetrics":
                repeats = max(a.repeats, 5)
            skip = pytorch_ood_problem() if "pytorch-ood" in method else None
            res = skip or spawn(["--worker", method, "--data", data, "--pixels", str(pixels),
                                 "--repeats", str(repeats)], a.timeout * repeats)
            rows.append((method, repeats, res))
            print(f"  {method}: {res if isinstance(res, str) else 'done'}", file=sys.stderr)
    print_table(rows)
    print_big(a)


def print_table(rows: list) -> None:
    ours = next(r[2] for r in rows if r[0].startswith("hazardseg"))
    ours_tp = ours["pixels"] / ours["seconds"] if isinstance(ours, dict) else float("nan")
    print("| method | pixels | repeats | median s | Mpix/s | hazardseg speed-up | peak RSS MiB "
          "(data only) | abs. diff AUPR / AUROC / FPR95 vs sklearn |")
    print("|---|---|---|---|---|---|---|---|")
    for method, repeats, r in rows:
        if isinstance(r, str):
            print(f"| {method} | | | | | | | {r} |")
            continue
        tp = r["pixels"] / r["seconds"]
        diff = " / ".join(f"{r['diff'][k]:.1e}" for k in KEYS)
        print(f"| {method} | {r['pixels']:.1e} | {repeats} | {r['seconds']:.2f} | {tp / 1e6:.1f} | "
              f"{ours_tp / tp:.0f}x | {r['peak_rss_mib']:.0f} ({r['data_rss_mib']:.0f}) | {diff} |")
    if isinstance(ours, dict):
        v = ours["values"]
        print(f"\nhazardseg values: AUPR {v['aupr']:.5f}  AUROC {v['auroc']:.5f}  FPR95 {v['fpr95']:.5f}")


def print_big(a: argparse.Namespace) -> None:
    print("\n| streaming run (AnomalyMetrics only) | seconds | Mpix/s | peak RSS MiB |\n|---|---|---|---|")
    for pixels in (1e8, a.big_pixels):
        r = spawn(["--big-worker", "--big-pixels", str(int(pixels))], timeout=1800)
        if isinstance(r, str):
            print(f"| {pixels:.2e} pixels | {r} | | |")
        else:
            print(f"| {r['pixels']:.2e} pixels | {r['seconds']:.1f} | {r['pixels'] / r['seconds'] / 1e6:.0f} | "
                  f"{r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
