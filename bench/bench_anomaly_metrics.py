"""Benchmark hazardseg.metrics.AnomalyMetrics against sklearn, torchmetrics and pytorch-ood.

Not a test. Sections (``--sections``, all by default):

* ``fixed``: a whole evaluation as callers pay it: a *fresh* metric object, ``update`` in image-sized
  chunks, ``compute``; the current AnomalyMetrics, the previous round's dense 142 MiB layout
  (``bench/dense_anomaly_metrics.py``) and pytorch-ood's ``OODMetrics`` on the same pixels in one
  process, alternating, at 1e6 / 1e7 / 1e8 pixels of a Gaussian, MSP (log), entropy and energy map;
  with construction and compute time and the state's memory;
* ``maps``: update throughput on each scorer's map of a simulated confident model (MSP, max
  logit, entropy, energy, plus a Gaussian map): the current implementation and the previous
  round's dense layout, timed alternately in one process, median of repeats;
* ``fidelity``: errors against the float64 sklearn / official computation on the papers' score
  definitions, before (previous scorers and metric) and after, prevalence 1e-2 .. 1e-5;
* ``ranking``: our MSP / entropy maps against pytorch-ood's ``MaxSoftmax`` / ``Entropy`` and the
  float64 definitions, by rank correlation (needs pytorch-ood);
* ``peers``: every method in a fresh subprocess on the same pixels (saved once to a temp file),
  so peak RSS (``ru_maxrss``) is per method. Throughput = pixels / median wall time of
  ``update`` (in image-sized chunks of 921,600 pixels) + ``compute`` for all three metrics;
* ``streaming``: 1e8 and 1.4e9 pixels through one AnomalyMetrics.

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
SECTIONS = ("fixed", "maps", "fidelity", "ranking", "peers", "streaming")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


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



# ---------------------------------------------------------------- scorer maps of a confident model
def previous_msp(logits: torch.Tensor) -> torch.Tensor:
    """The previous MSP scorer: ``-max softmax`` in float32 (collapses for confident pixels)."""
    return -torch.softmax(logits, dim=1).amax(dim=1)


def previous_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The previous entropy scorer: ``-sum p * log_softmax`` in float32."""
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=1)


def as_image(logits: torch.Tensor) -> torch.Tensor:
    """(n, C) -> (1, C, n, 1), the layout scorers take."""
    return logits.T.contiguous().view(1, logits.shape[1], -1, 1)


def confident_maps(normal: int, anomalies: int, seed: int, exact: bool = True) -> tuple[dict, dict, dict, torch.Tensor]:
    """(current maps, previous maps, float64 paper scores or {}, labels) of the simulated confident model."""
    from hazardseg.scorers import MSP, Energy, Entropy, MaxLogit
    from test_anomaly_metrics import confident_logits, paper_scores_float64

    logits, labels = confident_logits(normal, anomalies, seed=seed)
    image = as_image(logits)
    current = {name: cls()(image).view(-1) for name, cls in
               (("msp", MSP), ("maxlogit", MaxLogit), ("entropy", Entropy), ("energy", Energy))}
    previous = dict(current, msp=previous_msp(image).view(-1), entropy=previous_entropy(image).view(-1))
    return current, previous, paper_scores_float64(logits) if exact else {}, labels


def scorer_maps(pixels: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(current scorers' maps, previous scorers' maps, labels) of the simulated confident model, 1% anomalies."""
    parts = []  # generated in 1M-pixel pieces: the 13-class logits of all pixels at once would need GBs
    for seed, start in enumerate(range(0, pixels, 1_000_000)):
        n = min(1_000_000, pixels - start)
        parts.append(confident_maps(n - n // 100, n // 100, seed=40 + seed, exact=False))
    current = {k: torch.cat([part[0][k] for part in parts]) for k in parts[0][0]}
    previous = {k: torch.cat([part[1][k] for part in parts]) for k in parts[0][1]}
    return current, previous, torch.cat([part[3] for part in parts])


def bench_maps(pixels: int, repeats: int) -> None:
    from dense_anomaly_metrics import AnomalyMetrics as Dense

    from hazardseg.metrics import AnomalyMetrics

    current, previous, labels = scorer_maps(pixels)
    gen = torch.Generator().manual_seed(5)
    maps = {
        "msp: log(1 - max softmax)": current["msp"],
        "msp as -max softmax (previous scorer)": previous["msp"],
        "maxlogit": current["maxlogit"],
        "entropy": current["entropy"],
        "energy": current["energy"],
        "gaussian N(0,1), anomalies +1.5": torch.randn(pixels, generator=gen) + 1.5 * labels,
    }
    impls = {"dense (previous round)": Dense(), "current": AnomalyMetrics()}
    chunks = {name: list(zip(s.split(CHUNK), labels.split(CHUNK))) for name, s in maps.items()}
    for metric in impls.values():  # warm-up: allocations, lazy initialisation
        metric.update(*chunks["maxlogit"][0])
    seconds = {(name, impl): [] for name in maps for impl in impls}
    for _ in range(repeats):  # alternate implementations so all see the same machine load
        for name in maps:
            for impl, metric in impls.items():
                t0 = time.perf_counter()
                for cs, cy in chunks[name]:
                    metric.update(cs, cy)
                seconds[(name, impl)].append(time.perf_counter() - t0)
    print(f"\n### Update throughput per scorer map ({pixels:.2e} pixels in {CHUNK}-pixel updates, "
          f"1% anomalies, median of {repeats})\n")
    print("Mpx/s of `update` alone; `compute` runs once per evaluation, whatever the pixel count (last columns: "
          "its time, and the current implementation's Mpx/s over these updates plus one compute).\n")
    print("| score map | " + " | ".join(f"{impl} Mpx/s" for impl in impls) +
          " | current / dense | current compute s | current Mpx/s incl. compute |")
    print("|---|" + "---|" * (len(impls) + 3))
    for name, s in maps.items():
        tp = {impl: pixels / statistics.median(seconds[(name, impl)]) / 1e6 for impl in impls}
        metric = AnomalyMetrics()
        metric.update(s, labels)
        t0 = time.perf_counter()
        metric.compute()
        compute_s = time.perf_counter() - t0
        with_compute = pixels / (statistics.median(seconds[(name, "current")]) + compute_s) / 1e6
        print(f"| {name} | " + " | ".join(f"{tp[impl]:.0f}" for impl in impls) +
              f" | {tp['current'] / tp['dense (previous round)']:.2f}x | {compute_s:.3f} | {with_compute:.0f} |")


def fixed_maps(pixels: int, base: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gaussian, MSP (log), entropy and energy maps of ``pixels`` pixels, 1% anomalies. The scorer maps come from
    the simulated confident model (3.7 s per 1e6 pixels to generate), so above ``base`` pixels they repeat a
    ``base``-pixel map, each repeat j scaled by ``1 + j / 4096`` (distinct values in other bins, same ranking
    within a repeat)."""
    current, _, labels = scorer_maps(min(pixels, base))
    reps = -(-pixels // labels.numel())
    scale = lambda x: torch.cat([x * (1 + j / 4096) for j in range(reps)])[:pixels]  # noqa: E731
    labels = labels.repeat(reps)[:pixels]
    gen = torch.Generator().manual_seed(6)
    maps = {"gaussian N(0,1), anomalies +1.5": torch.randn(pixels, generator=gen) + 1.5 * labels}
    maps.update({name: scale(current[name]) for name in ("msp", "entropy", "energy")})
    return maps, labels


def bench_fixed(sizes: list[int], repeats: int, ood_max: int, base: int) -> None:
    """Fresh objects, construction + updates + compute, current vs dense layout vs pytorch-ood, same pixels."""
    from dense_anomaly_metrics import AnomalyMetrics as Dense

    from hazardseg.metrics import AnomalyMetrics

    have_ood = pytorch_ood_problem() is None
    print(f"\n### Whole evaluation, fresh objects (construction + updates of {CHUNK} pixels + compute), "
          f"median of {repeats} (pytorch-ood: of {max(1, repeats // 3)}; 1 above 1e7)\n")
    print("| map | pixels | current s (init / update / compute) | dense s (init / update / compute) | "
          "pytorch-ood s | current vs pytorch-ood | current vs dense | state MiB current / dense |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        maps, labels = fixed_maps(n, base)
        for name, scores in maps.items():
            chunks = list(zip(scores.split(CHUNK), labels.split(CHUNK)))
            times: dict[str, list] = {"current": [], "dense": [], "ood": []}
            state = {}
            for r in range(repeats):  # alternate, so every implementation sees the same machine load
                for impl, cls in (("current", AnomalyMetrics), ("dense", Dense)):
                    t0 = time.perf_counter()
                    metric = cls()
                    t1 = time.perf_counter()
                    for cs, cy in chunks:
                        metric.update(cs, cy)
                    t2 = time.perf_counter()
                    metric.compute()
                    t3 = time.perf_counter()
                    times[impl].append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
                    state[impl] = (metric.state_bytes() if impl == "current" else
                                   sum(t.numel() * t.element_size() for t in (metric.counts, metric.low_min, metric.low_max)))
                    del metric
                ood_runs = 1 if n > 1e7 else max(1, repeats // 3)
                if have_ood and n <= ood_max and r < ood_runs:
                    t0 = time.perf_counter()
                    run_pytorch_ood(scores, labels)
                    times["ood"].append(time.perf_counter() - t0)
            med = {k: [statistics.median(x) for x in zip(*v)] for k, v in times.items() if v and k != "ood"}
            ood = statistics.median(times["ood"]) if times["ood"] else None
            cur, den = med["current"], med["dense"]
            ood_txt = f"{ood:.3f}" if ood else "not run"
            ratio = f"{ood / cur[3]:.0f}x" if ood else "-"
            print(f"| {name} | {n:.0e} | {cur[3]:.4f} ({cur[0]:.4f} / {cur[1]:.4f} / {cur[2]:.4f}) | "
                  f"{den[3]:.4f} ({den[0]:.4f} / {den[1]:.4f} / {den[2]:.4f}) | {ood_txt} | {ratio} | "
                  f"{den[3] / cur[3]:.1f}x | {state['current'] / 2**20:.1f} / {state['dense'] / 2**20:.0f} |", flush=True)
        del maps, labels


def bench_fidelity(normal: int) -> None:
    from previous_anomaly_metrics import AnomalyMetrics as Previous
    from test_anomaly_metrics import reference

    from hazardseg.metrics import AnomalyMetrics

    anomalies = round(1e-2 * normal / (1 - 1e-2)) + 1
    current, previous, exact, labels = confident_maps(normal, anomalies, seed=3)
    order = {name: torch.argsort(v, descending=True, stable=True) for name, v in exact.items()}

    def errors(metric, scores, want) -> str:
        metric.update(scores, labels[: scores.numel()])
        got = metric.compute()
        return " / ".join(f"{abs(got[k] - want[k]):.1e}" for k in KEYS)

    print(f"\n### Errors against float64 sklearn / official FPR95 on the papers' definitions "
          f"(simulated confident model, {normal:.1e} normal pixels)\n")
    print("abs. error AUPR / AUROC / FPR95. Before: previous scorer (float32 `-max softmax`, naive entropy) "
          "through the previous AnomalyMetrics; sklearn column: sklearn on those same float32 values.\n")
    print("| scorer | prevalence | anomalies | reference AUPR / AUROC / FPR95 | before | before, sklearn "
          "on the float32 map | after |")
    print("|---|---|---|---|---|---|---|")
    for prevalence in (1e-2, 1e-3, 1e-4, 1e-5):
        n = normal + round(prevalence * normal / (1 - prevalence))
        for name in current:
            keep = order[name][order[name] < n]
            want = reference(exact[name][keep], labels[keep])
            sk = reference(previous[name][:n], labels[:n])
            sk_err = " / ".join(f"{abs(sk[k] - want[k]):.1e}" for k in KEYS)
            print(f"| {name} | {prevalence:.0e} | {int(labels[:n].sum())} | "
                  + " / ".join(f"{want[k]:.4f}" for k in KEYS)
                  + f" | {errors(Previous(), previous[name][:n], want)} | {sk_err} | "
                  f"{errors(AnomalyMetrics(), current[name][:n], want)} |", flush=True)


def bench_ranking(pixels: int) -> None:
    from scipy.stats import kendalltau, spearmanr

    from hazardseg.scorers import MSP, Entropy
    from test_anomaly_metrics import confident_logits

    problem = pytorch_ood_problem()
    if problem:
        print(f"\n### Ranking against pytorch-ood: skipped, {problem}")
        return
    from pytorch_ood.detector import Entropy as OODEntropy
    from pytorch_ood.detector import MaxSoftmax

    logits, _ = confident_logits(pixels - pixels // 100, pixels // 100, seed=6)
    image = as_image(logits)
    lg = image.double()
    exact_entropy = -(lg.softmax(1) * lg.log_softmax(1)).sum(1)
    rows = {
        "hazardseg MSP (float32) vs pytorch-ood MaxSoftmax on float64 logits": (MSP()(image), MaxSoftmax.score(lg)),
        "pytorch-ood MaxSoftmax on float32 logits vs on float64 logits": (MaxSoftmax.score(image), MaxSoftmax.score(lg)),
        "hazardseg Entropy (float32) vs float64 entropy": (Entropy()(image), exact_entropy),
        "previous entropy scorer (float32) vs float64 entropy": (previous_entropy(image), exact_entropy),
        "pytorch-ood Entropy (float32, p clipped at 1e-7) vs float64 entropy": (OODEntropy.score(image), exact_entropy),
    }
    sub = torch.randperm(logits.shape[0], generator=torch.Generator().manual_seed(7))[:100_000]
    print(f"\n### Ranking on a simulated confident model ({pixels:.1e} pixels; Kendall on 1e5 of them)\n")
    print("| maps compared | Spearman rho | Kendall tau | distinct values (first map) |")
    print("|---|---|---|---|")
    for what, (a, b) in rows.items():
        a, b = a.flatten().double().numpy(), b.flatten().double().numpy()
        rho = spearmanr(a, b).statistic
        tau = kendalltau(a[sub.numpy()], b[sub.numpy()]).statistic
        print(f"| {what} | {rho:.12f} | {tau:.9f} | {len(set(a.tolist())):,} |")


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
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the in-process sections (default: torch's)")
    p.add_argument("--fixed-pixels", default="1e6,1e7,1e8", help="comma-separated pixel counts (fixed section)")
    p.add_argument("--fixed-repeats", type=int, default=7, help="repeats of the fixed section (median)")
    p.add_argument("--fixed-ood-max", type=float, default=1e8, help="largest pixel count pytorch-ood is run on")
    p.add_argument("--fixed-base", type=float, default=1e7, help="generated scorer-map pixels (larger maps repeat them)")
    p.add_argument("--map-pixels", type=float, default=8 * CHUNK, help="pixels per scorer map (maps section)")
    p.add_argument("--map-repeats", type=int, default=7, help="repeats of the maps section (median)")
    p.add_argument("--fidelity-normal", type=float, default=2e6, help="normal pixels in the fidelity section")
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
    if a.threads:
        torch.set_num_threads(a.threads)
    sections = a.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    if "fixed" in sections:
        bench_fixed([int(float(x)) for x in a.fixed_pixels.split(",")], a.fixed_repeats, int(a.fixed_ood_max),
                    int(a.fixed_base))
    if "maps" in sections:
        bench_maps(int(a.map_pixels), a.map_repeats)
    if "fidelity" in sections:
        bench_fidelity(int(a.fidelity_normal))
    if "ranking" in sections:
        bench_ranking(2_000_000)
    if "peers" in sections:
        bench_peers(a)
    if "streaming" in sections:
        print_big(a)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def bench_peers(a: argparse.Namespace) -> None:
    n = int(a.pixels)
    print(f"\n### Peers: MSP scores of 19-class random logits, {n:.2e} pixels, ~1% anomalies\n")
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
