"""Compare hazardseg's SMIYC numbers with the benchmark's own code on the same exported float16 maps.

Not a test (the benchmark's code is not a dependency and is never copied here). Three steps:

    # 1. hazardseg side: build the frame sets, export the maps with BenchmarkEvaluator, record our numbers
    python bench/verify_smiyc_reference.py export --work /tmp/smiyc-verify
    # 2. the benchmark's side, in an environment with its requirements (numpy 1.23, scipy, h5py, easydict,
    #    matplotlib, pandas, jinja2, ipython) and a checkout of SegmentMeIfYouCan/road-anomaly-benchmark:
    /path/to/benchmark-venv/bin/python bench/verify_smiyc_reference.py reference --work /tmp/smiyc-verify \\
        --benchmark /path/to/road-anomaly-benchmark
    # 3. compare
    python bench/verify_smiyc_reference.py compare --work /tmp/smiyc-verify

Frame sets: the genuine SMIYC frames of the shared samples (1 AnomalyTrack, 2 ObstacleTrack) and generated
20-frame AnomalyTrack (2048x1024 and 1280x720 JPEG) and ObstacleTrack (1920x1080 WebP) folders. Score maps:
deterministic noisy versions of the label (tests/benchmark_folders.synthetic_scores) shaped like a probability
(prob), -max softmax (msp: collapses in float16 without the rescaling), -max logit (logit), a map saturated at
0/1 (saturated) and a very noisy probability (hard). The benchmark runs through its own ``Evaluation`` class
(parallel metric workers, curve file, threshold read back from it), with dataset configs equal to its
``AnomalyTrack-all`` / ``ObstacleTrack-all`` except for the folder (and no expected frame count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLES = REPO.parent / "shared" / "samples" / "smiyc"
KINDS = ["prob", "msp", "logit", "saturated", "hard"]
PIXEL = ["AP", "AUROC", "FPR95", "FPR95_threshold", "best_F1", "best_F1_threshold"]
COMPONENTS = ["sIoU_gt", "sIoU_pred", "PPV", "F1_25", "F1_50", "F1_75", "mean_F1"] + [
    f"{a}_{t}" for t in (25, 50, 75) for a in ("TP", "FN", "FP")
]


SETS = ("genuineA", "genuineO", "gen20A", "gen20O")


def frame_sets(work: Path, samples: Path, only: tuple[str, ...] = SETS) -> dict[str, tuple[str, Path]]:
    generated = work / "generated"
    sets = {
        "genuineA": ("anomaly", samples / "dataset_AnomalyTrack"),
        "genuineO": ("obstacle", samples / "dataset_ObstacleTrack"),
        "gen20A": ("anomaly", generated / "dataset_AnomalyTrack"),
        "gen20O": ("obstacle", generated / "dataset_ObstacleTrack"),
    }
    return {name: value for name, value in sets.items() if name in only}


def export(work: Path, samples: Path, only: tuple[str, ...]) -> None:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from benchmark_folders import smiyc_folder, synthetic_scores

    from hazardseg.data import SmiycAnomalyDataModule, SmiycObstacleDataModule
    from hazardseg.metrics import BenchmarkEvaluator
    from hazardseg.metrics.benchmark import LabelledFrames, compute_all

    generated = work / "generated"
    if not (generated / "dataset_AnomalyTrack").is_dir():
        frames = [(f"gen{i:04d}", (2048, 1024) if i % 2 == 0 else (1280, 720), True) for i in range(20)]
        smiyc_folder(generated / "dataset_AnomalyTrack", frames, ext=".jpg", seed=1, blobs=3)
        scenes = ["gravel", "greyasphalt", "motorway", "paving"]
        frames = [(f"{scenes[i % 4]}_obj{i}_{i}", (1920, 1080), True) for i in range(20)]
        smiyc_folder(generated / "dataset_ObstacleTrack", frames, ext=".webp", seed=2, blobs=4)
    results = {}
    for set_name, (track, root) in frame_sets(work, samples, only).items():
        cls = SmiycAnomalyDataModule if track == "anomaly" else SmiycObstacleDataModule
        dm = cls(root=root, num_workers=0)
        dm.setup("test")
        # the kinds are scored as an evaluation scores its scorers: one label store, one component pass
        frames = LabelledFrames()
        evaluators = {k: BenchmarkEvaluator(work / "outputs", f"{set_name}-{k}", track, submission=True, frames=frames)
                      for k in KINDS}
        for batch in dm.test_dataloader():
            label = batch["mask"][0].numpy().astype("uint8")
            index = frames.add(label)
            seed = zlib.crc32(batch["name"][0].encode())
            for kind, evaluator in evaluators.items():
                scores = synthetic_scores(label, seed, noise=1.2) if kind == "hard" else synthetic_scores(label, seed, kind=kind)
                evaluator.add(batch["name"][0], batch["group"][0], torch.from_numpy(scores), label, index)
        for kind, result in zip(evaluators, compute_all(list(evaluators.values()))):
            results[f"{set_name}-{kind}"] = {"track": track, **result}
            print(set_name, kind, "AP", results[f"{set_name}-{kind}"]["AP"], flush=True)
    (work / "ours.json").write_text(json.dumps(results, indent=1))


def reference(work: Path, samples: Path, benchmark: Path, only: tuple[str, ...]) -> None:
    os.environ["DIR_OUTPUTS"] = str(work / "outputs")
    sys.path.insert(0, str(benchmark))
    from functools import partial

    from easydict import EasyDict
    from road_anomaly_benchmark.datasets.dataset_registry import DatasetRegistry
    from road_anomaly_benchmark.datasets.tracks import DatasetAnomalyTrack, DatasetObstacleTrack
    from road_anomaly_benchmark.evaluation import Evaluation

    for set_name, (track, root) in frame_sets(work, samples, only).items():
        if track == "anomaly":
            cfg = dict(name=f"V-{set_name}", dir_root=root, img_fmt="jpg", classes=dict(usual=0, anomaly=1, ignore=255),
                       name_for_persistence="AnomalyTrack-all")
            DatasetRegistry.register(cfg["name"], partial(DatasetAnomalyTrack, EasyDict(cfg)))
        else:
            cfg = dict(name=f"V-{set_name}", dir_root=root, img_fmt="webp", classes=DatasetObstacleTrack.CLASS_IDS,
                       scenes=DatasetObstacleTrack.SCENES_ALL, name_for_persistence="ObstacleTrack-all")
            DatasetRegistry.register(cfg["name"], partial(DatasetObstacleTrack, EasyDict(cfg)))
    ours = json.loads((work / "ours.json").read_text())
    theirs = {}
    for method, o in ours.items():
        ev = Evaluation(method_name=method, dataset_name=f"V-{method.split('-')[0]}")
        pix = ev.calculate_metric_from_saved_outputs("PixBinaryClass", parallel=True)
        seg = ev.calculate_metric_from_saved_outputs(
            "SegEval-AnomalyTrack" if o["track"] == "anomaly" else "SegEval-ObstacleTrack", parallel=True)
        theirs[method] = {
            "AP": float(pix.area_PRC), "AUROC": float(pix.area_ROC), "FPR95": float(pix.tpr95_fpr),
            "FPR95_threshold": float(pix.tpr95_threshold), "best_F1": float(pix.best_f1),
            "best_F1_threshold": float(pix.best_f1_threshold), "sIoU_gt": float(seg.sIoU_gt),
            "sIoU_pred": float(seg.sIoU_pred), "PPV": float(seg.prec_pred), "F1_25": float(seg.f1_25),
            "F1_50": float(seg.f1_50), "F1_75": float(seg.f1_75), "mean_F1": float(seg.f1_mean),
            **{f"{a.upper()}_{t}": int(getattr(seg, f"{a}_{t}")) for t in (25, 50, 75) for a in ("tp", "fn", "fp")},
        }
    (work / "theirs.json").write_text(json.dumps(theirs, indent=1))


def compare(work: Path) -> None:
    ours = json.loads((work / "ours.json").read_text())
    theirs = json.loads((work / "theirs.json").read_text())
    worst = {"pixel": 0.0, "components": 0.0}
    print("| maps | AP ours | AP benchmark | FPR95 ours / bench | sIoU_gt ours / bench | PPV ours / bench | "
          "mean_F1 ours / bench | max abs diff pixel | max abs diff components | top-threshold tie |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, t in theirs.items():
        o = ours[method]
        tied = "top_threshold_ties" in o
        if tied:  # the benchmark's AP/AUROC then depend on its frame order: they must lie in our interval
            assert o["AP_tie_min"] - 1e-12 <= t["AP"] <= o["AP_tie_max"] + 1e-12, method
            assert o["AUROC_tie_min"] - 1e-12 <= t["AUROC"] <= o["AUROC_tie_max"] + 1e-12, method
        dp = max(abs(o[k] - t[k]) for k in PIXEL if not (tied and k in ("AP", "AUROC")))
        dc = max(abs(o[k] - t[k]) for k in COMPONENTS)
        worst["pixel"], worst["components"] = max(worst["pixel"], dp), max(worst["components"], dc)
        tie = f"{o['top_threshold_ties']} frames, AP in [{o['AP_tie_min']:.6f}, {o['AP_tie_max']:.6f}]" if tied else "-"
        print(f"| {method} | {o['AP']:.6f} | {t['AP']:.6f} | {o['FPR95']:.6f} / {t['FPR95']:.6f} | "
              f"{o['sIoU_gt']:.5f} / {t['sIoU_gt']:.5f} | {o['PPV']:.5f} / {t['PPV']:.5f} | "
              f"{o['mean_F1']:.4f} / {t['mean_F1']:.4f} | {dp:.1e} | {dc:.1e} | {tie} |")
    print(f"worst abs diff (AP/AUROC of tied cases excluded, checked against the interval): {worst}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["export", "reference", "compare"])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (maps, generated sets, json)")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="folder with the genuine SMIYC samples")
    parser.add_argument("--benchmark", type=Path, help="checkout of road-anomaly-benchmark (reference step)")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {','.join(SETS)}")
    args = parser.parse_args()
    only = tuple(args.sets.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "export":
        export(args.work, args.samples, only)
    elif args.step == "reference":
        if args.benchmark is None:
            parser.error("reference needs --benchmark /path/to/road-anomaly-benchmark")
        reference(args.work, args.samples, args.benchmark, only)
    else:
        compare(args.work)


if __name__ == "__main__":
    main()
