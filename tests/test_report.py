"""Reports without W&B: the long sweep report (CSV/Markdown/plots), the CLI, the run table."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from hazardseg.report import run_rows, run_summary_table, write_sweep_report
from hazardseg.console import render_table


def _job(sweep: Path, num: int, overrides: list[str], results: dict | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if results is not None:
        (job / "results.json").write_text(json.dumps(results))


def _completed(scorers: dict[str, float], miou: float, loss: str) -> dict:
    rows = [{"scorer": s, "aupr": a, "auroc": 0.9, "fpr95": 0.3, "per_image_aupr": a / 2, "per_image_auroc": 0.8,
             "per_image_fpr95": 0.4, "test_miou": miou} for s, a in scorers.items()]
    return {"status": "completed", "task": "train", "scorers": rows, "metrics": {"test/miou": miou},
            "choices": {"data": "synthetic", "loss": loss}, "objective": {"metric": "val/miou", "value": miou + 0.01},
            "reused_checkpoint": False, "train_hash": "abc", "wall_time_s": 1.0}


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "multirun"
    _job(sweep, 0, ["loss=ce", "scorer=all", "trainer=debug"], _completed({"msp": 0.2, "sml": 0.4}, 0.5, "ce"))
    _job(sweep, 1, ["loss=ce+aux", "scorer=all", "trainer=debug"], _completed({"msp": 0.25, "sml": 0.5}, 0.55, "ce+aux"))
    _job(sweep, 2, ["loss=fl+h", "scorer=all", "trainer=debug"], {"status": "failed", "error": "ConfigError: bad lr"})
    _job(sweep, 3, ["loss=bogus", "scorer=all", "trainer=debug"], None)  # killed: no results.json
    (sweep / "0" / "pr_curves.json").write_text(json.dumps({"msp": {"recall": [0, 0.5, 1], "precision": [1, 0.6, 0.1],
                                                                     "fpr": [0, 0.1, 1], "tpr": [0, 0.5, 1]}}))
    return sweep


def test_sweep_report_is_long_with_override_columns_and_failed_jobs(sweep):
    written = write_sweep_report(sweep)
    rows = list(csv.DictReader(written["csv"].open()))
    # one row per (job, scorer); failed and missing jobs keep one row each
    assert [(r["job"], r["scorer"]) for r in rows] == [("0", "msp"), ("0", "sml"), ("1", "msp"), ("1", "sml"), ("2", ""), ("3", "")]
    assert [r["status"] for r in rows][-2:] == ["failed", "missing"]
    # the overridden keys are columns (named as typed); `scorer` collides with the key column and keeps a prefix
    assert {"loss", "trainer", "override:scorer", "dataset", "scorer", "aupr", "per_image_aupr", "miou", "objective"} <= set(rows[0])
    assert rows[3]["loss"] == "ce+aux" and float(rows[3]["aupr"]) == 0.5 and rows[3]["dataset"] == "synthetic"
    assert not any(k.startswith("test/") for k in rows[0])  # no wide per-scorer columns any more
    md = written["md"].read_text()
    assert "| **55.0** |" in md.replace("**50.0** |", "")  # best mIoU in bold
    assert "Overrides common to all jobs: `scorer=all trainer=debug`" in md
    assert "job 2 (failed): `loss=fl+h scorer=all trainer=debug`: ConfigError: bad lr" in md and "job 3 (missing)" in md
    for key in ("png_metrics", "png_pr_curves", "png_tradeoff"):
        assert written[key].stat().st_size > 5000 and f"]({written[key].name})" in md


def test_report_cli(sweep, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hazardseg.report", str(sweep)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep results" in proc.stdout and "failed: [2, 3]" in proc.stdout
    assert (sweep / "sweep_report.md").is_file()
    missing = subprocess.run([sys.executable, "-m", "hazardseg.report", str(tmp_path / "nope")], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "error:" in missing.stdout


def test_run_table_lists_scorers_objective_and_checkpoint():
    results = {**_completed({"msp": 0.2, "energy": 0.3}, 0.5, "ce"), "checkpoint": "models/abc/checkpoints/best.ckpt"}
    text = render_table(run_summary_table(results))
    assert "energy" in text and "30.0" in text and "50.0" in text
    assert "objective val/miou = 51.0 (validation)" in text and "best.ckpt" in text
    assert [r["scorer"] for r in run_rows(results)] == ["msp", "energy"]


def test_rows_keep_extra_key_columns():
    """A run whose scorer rows carry another key (e.g. per test benchmark) keeps it as a key column."""
    results = _completed({"msp": 0.2}, 0.5, "ce")
    results["scorers"] = [{**results["scorers"][0], "dataset": "smiyc_anomaly"}, {**results["scorers"][0], "dataset": "fishyscapes"}]
    assert [r["dataset"] for r in run_rows(results)] == ["smiyc_anomaly", "fishyscapes"]


def test_family_and_method_columns_come_from_the_jobs_choices_when_presets_vary_them(tmp_path):
    """+sweep=families: jobs differ by experiment preset only; the report still shows model (family) and loss (method)."""
    from hazardseg.report import write_sweep_report

    sweep = tmp_path / "families"
    for num, (preset, model, loss) in enumerate([("families/deeplabv3plus", "deeplabv3plus", "ce"),
                                                 ("families/rba", "mask2former", "rba"), ("families/uno", "mask2former", "uno")]):
        results = _completed({"msp": 0.2 + num / 10}, 0.6, loss)
        results["choices"]["model"] = model
        _job(sweep, num, [f"experiment={preset}", "+sweep=families"], results)
    write_sweep_report(sweep, plots=False)
    header = (sweep / "sweep_report.md").read_text().split("\n| job ")[1].split("\n")[0]
    assert header.startswith("| experiment | model | loss | dataset | scorer |")
    with open(sweep / "sweep_report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["loss"]) for r in rows] == [("deeplabv3plus", "ce"), ("mask2former", "rba"), ("mask2former", "uno")]
