"""Hydra callback writing ``sweep_report.{json,csv}`` in the multirun folder when a sweep ends.

Each row is one job: its overrides, status (completed / failed / missing), the reused-model flag and
headline metrics, so a failed job is visible instead of silently absent.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hazardseg.cli import report_sweep_failures
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
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        print(f"[hazardseg] sweep report: {sweep_dir / 'sweep_report.csv'} ({len(rows) - len(failed)} completed, failed: {failed or 'none'})")
        report_sweep_failures(sweep_dir)  # prints each failed job and its error; the process then exits non-zero


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
    row["skipped_samples"] = len(results.get("skipped_samples") or {})  # files in the job's results.json
    row["train_hash"] = results.get("train_hash")
    metrics = results.get("metrics", {})
    row["test/miou"] = metrics.get("test/miou")
    for key, value in metrics.items():
        if key.count("/") == 2 and key.rsplit("/", 1)[-1] in ("aupr", "auroc", "fpr95"):
            row[key] = value
    return row


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]


def _overrides(job_dir: Path) -> str:
    file = job_dir / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return ""
    lines = [line.removeprefix("- ").strip() for line in file.read_text().splitlines() if line.startswith("- ")]
    return " ".join(lines)
