"""Hydra callback writing the sweep's reports in the multirun folder when a sweep ends.

- ``sweep_report.{json,csv}``: one row per job: its overrides, status (completed / failed / missing),
  the reused-model flag and headline metrics, so a failed job is visible instead of silently absent;
- ``sweep_table.{csv,md}``: one row per job x scorer, the comparison of ``python train.py -m
  loss=ce,meta_ood,void scorer=all``: the method (the job's ``experiment``, else its ``loss`` option),
  the scorer, pooled and per-image AUPR / AUROC / FPR95 and the test mIoU.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hazardseg.io import atomic_write_json, atomic_write_text


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = [job_row(job_dir) for job_dir in sorted(_job_dirs(sweep_dir), key=lambda p: int(p.name))]
        if not rows:
            return
        atomic_write_json(sweep_dir / "sweep_report.json", rows)
        columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "job", k != "overrides", k != "status", k))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(sweep_dir / "sweep_report.csv", buffer.getvalue())
        table = [line for job_dir in sorted(_job_dirs(sweep_dir), key=lambda p: int(p.name)) for line in scorer_table_rows(job_dir)]
        if table:
            write_table(sweep_dir, table)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        print(f"[hazardseg] sweep report: {sweep_dir / 'sweep_report.csv'} ({len(rows) - len(failed)} completed, failed: {failed or 'none'})")


def job_row(job_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"job": int(job_dir.name), "overrides": _overrides(job_dir)}
    results_file = job_dir / "results.json"
    if not results_file.is_file():
        return {**row, "status": "missing"}
    results = json.loads(results_file.read_text())
    row["status"] = results.get("status", "unknown")
    if row["status"] != "completed":
        return {**row, "error": results.get("error", "")}
    row["reused_checkpoint"] = results.get("reused_checkpoint")
    row["train_hash"] = results.get("train_hash")
    metrics = results.get("metrics", {})
    row["test/miou"] = metrics.get("test/miou")
    for key, value in metrics.items():
        if key.count("/") == 2 and key.rsplit("/", 1)[-1] in ("aupr", "auroc", "fpr95"):
            row[key] = value
    return row


TABLE_COLUMNS = ("job", "method", "scorer", "aupr", "auroc", "fpr95", "per_image_aupr", "per_image_auroc",
                 "per_image_fpr95", "test_miou", "overrides")


def scorer_table_rows(job_dir: Path) -> list[dict[str, Any]]:
    """The job's scorer rows (``results.json`` "scorers"), each with the job number, method and overrides."""
    results_file = job_dir / "results.json"
    if not results_file.is_file():
        return []
    results = json.loads(results_file.read_text())
    if results.get("status") != "completed":
        return []
    common = {"job": int(job_dir.name), "method": _method(job_dir), "overrides": _overrides(job_dir)}
    return [{**common, **{k: row.get(k) for k in TABLE_COLUMNS if k in row}} for row in results.get("scorers", [])]


def write_table(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "sweep_table.csv", buffer.getvalue())
    shown = TABLE_COLUMNS[1:-1]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in shown) + " |" for row in rows]
    atomic_write_text(sweep_dir / "sweep_table.md", "\n".join(lines) + "\n")
    print(f"[hazardseg] method x scorer table: {sweep_dir / 'sweep_table.md'}\n" + "\n".join(lines))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def _method(job_dir: Path) -> str:
    """The job's ``experiment`` choice, else its ``loss`` choice (from Hydra's saved runtime choices)."""
    file = job_dir / ".hydra" / "hydra.yaml"
    if not file.is_file():
        return ""
    from omegaconf import OmegaConf

    choices = OmegaConf.load(file).hydra.runtime.get("choices", {})
    return str(choices.get("experiment") or choices.get("loss") or "")


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]


def _overrides(job_dir: Path) -> str:
    file = job_dir / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return ""
    lines = [line.removeprefix("- ").strip() for line in file.read_text().splitlines() if line.startswith("- ")]
    return " ".join(lines)
