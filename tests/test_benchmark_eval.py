"""eval.py on the test-only anomaly benchmarks: `data=<benchmark>` tests there while scorers fit on the model's
own training data; every scorer gets the leaderboard's metrics (BenchmarkEvaluation) and submission files;
a multirun over the five benchmarks gives one (dataset x scorer) sweep report; the GPU preset composes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class

from benchmark_folders import benchmark_roots, smiyc_anomaly_folder
from conftest import CONF, REPO
from hazardseg.data import LostAndFoundDataModule
from hazardseg.errors import ConfigError, DataError
from hazardseg.metrics import BenchmarkEvaluator, read_score_map
from hazardseg.metrics.submission import Float16Encoder
from hazardseg.pipeline import evaluate, train

BENCHMARKS = ["smiyc_anomaly", "smiyc_obstacle", "fishyscapes_laf", "lost_and_found", "road_anomaly"]
EVAL = ["logger=none", "trainer.enable_progress_bar=false", "eval.fit_batches=2", "eval.panels=0", "++data.num_workers=0"]


def test_eval_on_a_benchmark_scores_every_scorer_as_the_leaderboard(trained, make_cfg, tmp_path, capsys):
    root = smiyc_anomaly_folder(tmp_path / "bench")
    cfg = make_cfg([*EVAL, f"ckpt_path={trained['checkpoint']}", "data=smiyc_anomaly", f"++data.root={root}",
                    "++data.image_size=[64,112]", "scorer=[msp,sml]", "submission=true"], config_name="eval")
    results = evaluate(cfg)
    out = capsys.readouterr().out
    assert "scorer 'sml': fitting statistics on the training split" in out  # on the model's own data
    assert "test-only anomaly benchmark" in out and "no mIoU" in out
    assert "test/miou" not in results["metrics"] and results["choices"]["data"] == "smiyc_anomaly"
    assert results["train_data"] == "synthetic"
    rows = {r["scorer"]: r for r in results["scorers"]}
    assert set(rows) == {"msp", "sml"}
    for name, row in rows.items():
        for key in ("aupr", "auroc", "fpr95", "AP", "FPR95", "best_F1", "best_F1_threshold", "sIoU_gt", "PPV", "mean_F1"):
            assert row[key] is not None, (name, key)
        bench = results["benchmark"][name]
        assert (bench["num_frames"], bench["num_scored_frames"]) == (3, 2)
        # The submission files are at the label's size (input resized to 64x112, maps upsampled) and the
        # numbers are those of the exported float16 maps, read back as the benchmark reads them.
        folder = Path(cfg.paths.output_dir) / "anomaly_p" / f"{results['train_hash']}-{name}" / "AnomalyTrack-all"
        assert sorted(p.name for p in folder.iterdir()) == ["test0000.hdf5", "validation0000.hdf5", "validation0001.hdf5"]
        check = BenchmarkEvaluator(cfg.paths.output_dir, "check", "anomaly", encoder=Float16Encoder("none"), pooled=False)
        for fid in ("validation0000", "validation0001"):
            label = np.asarray(Image.open(root / "labels_masks" / f"{fid}_labels_semantic.png"))
            scores = read_score_map(folder / f"{fid}.hdf5")
            assert scores.shape == label.shape and scores.dtype == np.float16
            check.add(fid, "x", scores.astype(np.float32), label)
        again = check.compute()
        for key in ("AP", "FPR95", "best_F1", "best_F1_threshold", "sIoU_gt", "PPV", "mean_F1"):
            assert abs(again[key] - row[key]) <= 1e-12, (name, key)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["scorers"][0]["AP"] == rows["msp"]["AP"]
    header = (Path(cfg.paths.output_dir) / "scorers.csv").read_text().splitlines()[0].split(",")
    assert {"AP", "sIoU_gt", "PPV", "mean_F1", "best_F1_threshold"} <= set(header)


def test_train_refuses_a_test_only_benchmark(make_cfg):
    for name in BENCHMARKS:
        with pytest.raises(ConfigError) as err:
            train(make_cfg(["logger=none", f"data={name}"]))
        message = str(err.value)
        assert "\n" not in message and f"data={name} is a test-only anomaly benchmark" in message and "eval.py" in message


def test_eval_on_a_benchmark_without_data_root_names_it_and_the_download(trained, make_cfg, monkeypatch):
    monkeypatch.delenv("SMIYC_OBSTACLE_ROOT", raising=False)
    cfg = make_cfg([*EVAL, f"ckpt_path={trained['checkpoint']}", "data=smiyc_obstacle"], config_name="eval")
    with pytest.raises(DataError) as err:
        evaluate(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.root is not set")
    assert "dataset_ObstacleTrack" in message and "segmentmeifyoucan.com" in message


def test_anomaly_benchmarks_preset_composes_every_benchmark():
    """eval_preset=anomaly_benchmarks: GPU trainer, every scorer, submission files, one job per benchmark."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("eval", overrides=["eval_preset=anomaly_benchmarks", "ckpt_path=x"], return_hydra_config=True)
        assert cfg.trainer.accelerator == "gpu" and cfg.submission is True
        assert set(cfg.scorer) == set(compose("eval", overrides=["scorer=all", "ckpt_path=x"]).scorer)  # every scorer
        assert {"msp", "sml", "mahalanobis", "void"} <= set(cfg.scorer)
        assert cfg.hydra.sweeper.params.data.split(",") == BENCHMARKS
        assert cfg.callbacks.benchmark_evaluation.submission is True
        for name in BENCHMARKS:  # what each job of the sweep composes
            job = compose("eval", overrides=["eval_preset=anomaly_benchmarks", "ckpt_path=x", f"data={name}"])
            cls = get_class(job.data._target_)
            assert cls.test_only and cls.name == name and job.trainer.accelerator == "gpu"
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_multirun_over_the_five_benchmarks_gives_one_dataset_by_scorer_report(trained, tmp_path):
    roots = benchmark_roots(tmp_path / "data")
    env = {**os.environ, **roots, "PYTHONPATH": str(REPO / "src")}
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), "-m", f"ckpt_path={trained['checkpoint']}", f"data={','.join(BENCHMARKS)}",
         "scorer=all", *EVAL, f"hydra.sweep.dir={sweep}", f"paths.model_store={tmp_path / 'store'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (sweep / "sweep_report.csv").open() as f:
        rows = list(csv.DictReader(f))
    scorers = ("msp", "maxlogit", "entropy", "energy", "sml", "mahalanobis")  # void, densehybrid: the model has no such head
    assert {(r["dataset"], r["scorer"]) for r in rows} == {(d, s) for d in BENCHMARKS for s in scorers}
    assert all(r["status"] == "completed" and r["AP"] and r["aupr"] and not r["miou"] for r in rows)
    report = (sweep / "sweep_report.md").read_text()
    assert "SMIYC leaderboard's convention" in report and "| fishyscapes_laf | sml |" in report.replace("data=", "")
    laf = next(Path(r["run_dir"]) for r in rows if r["dataset"] == "lost_and_found")
    test_no_known = LostAndFoundDataModule(root=roots["LAF_ROOT"])
    test_no_known.setup("test")
    assert json.loads((laf / "results.json").read_text())["benchmark"]["msp"]["num_scored_frames"] == len(test_no_known.frames)


def test_benchmark_folder_without_any_label_is_refused_unless_submission(trained, make_cfg, tmp_path):
    # validation frames whose labels_masks/ folder is missing: no silent "exit 0, nothing computed"
    import shutil

    root = smiyc_anomaly_folder(tmp_path / "bench")
    shutil.rmtree(root / "labels_masks")
    common = [*EVAL, f"ckpt_path={trained['checkpoint']}", "data=smiyc_anomaly", f"++data.root={root}",
              "++data.image_size=[64,112]", "scorer=msp"]
    with pytest.raises(DataError) as e:
        evaluate(make_cfg(common, config_name="eval"))
    msg = str(e.value)
    assert "\n" not in msg and "none of the 3 frames" in msg and "labels_masks/<fid>_labels_semantic.png" in msg
    assert "submission=true" in msg
    results = evaluate(make_cfg([*common, "submission=true"], config_name="eval"))  # asked for: files only
    assert results["benchmark"]["msp"]["num_scored_frames"] == 0 and "no metrics" in results["benchmark"]["msp"]["note"]
