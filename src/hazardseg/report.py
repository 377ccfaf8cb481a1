"""Reports that need no W&B: the final table of a run, and the report of a sweep.

* End of every ``train.py`` / ``eval.py`` run: a table of its final metrics (test mIoU; AUPR / AUROC /
  FPR95 per scorer, pooled and per image), the validation objective and the best checkpoint, printed
  through :func:`hazardseg.console.say` (terminal and ``<run dir>/<task>.log``) and sent to W&B as the
  ``results`` table (one row per (run, scorer)).
* End of every multirun (Hydra callback :class:`hazardseg.sweep.SweepReport`) and on demand::

      python -m hazardseg.report outputs/train/multiruns/<date>

  writes into the multirun folder ``sweep_report.csv`` (long format: one row per (job, scorer), the
  overridden keys as columns), ``sweep_report.md`` (the same as Markdown, failed jobs listed) and PNG
  plots (``sweep_metrics.png`` bars, ``sweep_pr_curves.png``, ``sweep_tradeoff.png`` AUPR vs mIoU).

Long rows keep *key* columns (job, overrides, ``dataset``, ``scorer``) apart from *metric* columns, so
a further key (e.g. rows per (dataset, scorer) of test-only benchmarks, copied from the run's
``results["scorers"]``) is one more key column, not a wider table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from hazardseg import figures
from hazardseg.console import render_table, say
from hazardseg.io import atomic_path, atomic_write_text, job_overrides
from hazardseg.metrics.names import ANOMALY, BENCHMARK, BENCHMARK_THRESHOLDS, ERROR_BOUND, higher_is_better
from hazardseg import signals

METRICS = ("miou", *ANOMALY, *(f"per_image_{k}" for k in ANOMALY))
# Test-only anomaly benchmarks (hazardseg.callbacks.BenchmarkEvaluation): the leaderboard's metrics under their
# own names (SMIYC convention), in %, and the score threshold they use (in the exported float16 score space).
BENCHMARK_METRICS = tuple(BENCHMARK)
THRESHOLDS = BENCHMARK_THRESHOLDS
LOWER_IS_BETTER = {m for m in (*METRICS, *BENCHMARK_METRICS) if higher_is_better(m) is False}
# The network family and the method of a job, shown where jobs differ in them though no override names them
# (jobs that are experiment presets, e.g. +sweep=families).
CHOICE_COLUMNS = ("model", "loss")
JOB_COLUMNS = ("objective_metric", "objective", "reused_checkpoint", "train_hash", "wall_time_s", "run_dir", "error")
CURVES_FILE = "pr_curves.json"


# ---------------------------------------------------------------------------- one run
def run_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scorer (or one row without scorer) of a completed run: key columns, then metrics."""
    dataset = (results.get("choices") or {}).get("data")
    miou = (results.get("metrics") or {}).get("test/miou")
    rows = []
    for scorer_row in results.get("scorers") or [{}]:
        row: dict[str, Any] = {"dataset": dataset, "scorer": None}
        row.update({k: v for k, v in scorer_row.items() if not _is_metric(k)})  # key columns (scorer, dataset, ...)
        row["miou"] = scorer_row.get("test_miou", scorer_row.get("miou", miou))
        row.update({k: scorer_row.get(k) for k in METRICS if k != "miou"})
        row.update({k: scorer_row[k] for k in (*BENCHMARK_METRICS, *THRESHOLDS) if k in scorer_row})
        rows.append(row)
    return rows


def run_summary_table(results: dict[str, Any]):
    """Rich table of a run's final metrics, the validation objective and the best checkpoint."""
    from rich.table import Table

    rows = run_rows(results)
    keys = [k for k in rows[0] if not _is_metric(k) and any(r.get(k) is not None for r in rows)]
    metrics = [m for m in (*METRICS, *BENCHMARK_METRICS, *THRESHOLDS) if any(r.get(m) is not None for r in rows)]
    title = f"{results.get('task', 'run')} results"
    objective = results.get("objective") or {}
    caption = []
    if objective.get("value") is not None:
        caption.append(f"objective {objective['metric']} = {_pct(objective['value'])} (validation)")
    if results.get("checkpoint"):
        caption.append(f"best checkpoint: {results['checkpoint']}")
    table = Table(title=title, caption="\n".join(caption) or None, caption_justify="left")
    for key in keys:
        table.add_column(key)
    for metric in metrics:
        table.add_column(_header(metric), justify="right")
    for row in rows:
        table.add_row(*[str(row.get(k) or "") for k in keys], *[_cell(m, row.get(m)) for m in metrics])
    return table


def finish_run(results: dict[str, Any], loggers: Iterable) -> None:
    """End of a completed run: print its table, and give loggers that take them the (run, scorer) rows."""
    if not results.get("metrics") and not results.get("objective"):
        return
    signals.stop_point("report")
    say(render_table(run_summary_table(results)))
    identity = {"task": results.get("task"), "train_hash": results.get("train_hash"),
                **{f"choice.{k}": v for k, v in (results.get("choices") or {}).items()}}
    rows = [{**identity, **row} for row in run_rows(results)]
    columns = list(rows[0])
    summary = {k: v for k, v in (results.get("metrics") or {}).items() if v is not None}
    objective = results.get("objective") or {}
    if objective.get("value") is not None:
        summary.update(objective=objective["value"], objective_metric=objective["metric"])
    summary.update({f"trained_in.{k}": v for k, v in (results.get("trained_in") or {}).items()})
    for logger in loggers:
        if hasattr(logger, "log_results"):
            logger.log_results(columns, [[r.get(c) for c in columns] for r in rows], summary)


# ---------------------------------------------------------------------------- a sweep
def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Long rows of every job folder (``<sweep>/<n>/``) of a multirun, failed and missing jobs included."""
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    rows: list[dict[str, Any]] = []
    for job_dir in jobs:
        rows.extend(job_rows(job_dir))
    return rows


def job_rows(job_dir: Path) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"job": int(job_dir.name), "overrides": " ".join(job_overrides(job_dir)), "run_dir": str(job_dir)}
    base.update({f"override:{k}": v for k, v in _override_pairs(job_dir).items()})
    results_file = job_dir / "results.json"
    if not results_file.is_file():
        return [{**base, "status": "missing", "error": "no results.json (job killed or never started)"}]
    results = json.loads(results_file.read_text())
    base["status"] = results.get("status", "unknown")
    if base["status"] != "completed":
        return [{**base, "error": results.get("error", "")}]
    choices = results.get("choices") or {}
    base.update({f"choice:{group}": choices.get(group) for group in CHOICE_COLUMNS if f"override:{group}" not in base})
    objective = results.get("objective") or {}
    job = {"objective_metric": objective.get("metric"), "objective": objective.get("value"),
           "reused_checkpoint": results.get("reused_checkpoint"), "train_hash": results.get("train_hash"),
           "wall_time_s": results.get("wall_time_s")}
    return [{**base, **row, **job} for row in run_rows(results)]


def columns_of(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """job, status, the overridden keys (named as on the command line), key columns, metrics, job info."""
    present = {k for r in rows for k in r}
    overrides = sorted({k for k in present if k.startswith("override:")})
    names = {k: k.removeprefix("override:") for k in overrides}
    names.update({k: k.removeprefix("choice:") for k in present if k.startswith("choice:")})
    fixed = {"job", "status", "overrides", *METRICS, *BENCHMARK_METRICS, *THRESHOLDS, *JOB_COLUMNS}
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in fixed and not k.startswith("override:")]
    for k in overrides:  # an override named like a key column (e.g. scorer=all vs the row's scorer) keeps its prefix
        if names[k] in keys or names[k] in fixed:
            names[k] = k
    metrics = [m for m in (*METRICS, *BENCHMARK_METRICS, *THRESHOLDS) if m in present]
    ordered = ["job", "status", *overrides, *keys, *metrics, *[c for c in JOB_COLUMNS if c in present]]
    return [c for c in ordered if c in present or c in ("job", "status")], names


def varying(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """The columns to show in tables: overridden keys only where jobs differ (constant ones go to the header)."""
    jobs = {r["job"]: r for r in rows}.values()
    return [c for c in columns if not c.startswith(("override:", "choice:")) or len({str(r.get(c)) for r in jobs}) > 1]


def common_overrides(rows: list[dict[str, Any]], columns: list[str], names: dict[str, str]) -> list[str]:
    jobs = list({r["job"]: r for r in rows}.values())
    return [f"{names.get(c, c).removeprefix('override:')}={jobs[0].get(c)}" for c in columns
            if c.startswith("override:") and len({str(r.get(c)) for r in jobs}) == 1 and jobs[0].get(c) is not None]


def write_sweep_report(sweep_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write sweep_report.{csv,md,json} and PNG plots into ``sweep_dir``; return the written files."""
    sweep_dir = Path(sweep_dir)
    rows = sweep_rows(sweep_dir)
    if not rows:
        return {}
    signals.stop_point("report")
    columns, names = columns_of(rows)
    written = {"csv": sweep_dir / "sweep_report.csv", "md": sweep_dir / "sweep_report.md", "json": sweep_dir / "sweep_report.json"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[names.get(c, c) for c in columns], extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{names.get(c, c): r.get(c) for c in columns} for r in rows])
    atomic_write_text(written["csv"], buffer.getvalue())
    atomic_write_text(written["json"], json.dumps(rows, indent=2, default=str) + "\n")
    if plots:
        written.update(plot_sweep(sweep_dir, rows, columns, names))
    atomic_write_text(written["md"], sweep_markdown(sweep_dir, rows, columns, names, {k: v for k, v in written.items() if k.startswith("png")}))
    return written


def sweep_markdown(sweep_dir: Path, rows: list[dict], columns: list[str], names: dict[str, str], images: dict[str, Path]) -> str:
    done = [r for r in rows if r["status"] == "completed"]
    failed = [r for r in rows if r["status"] != "completed"]
    jobs = sorted({r["job"] for r in rows})
    shown = [c for c in varying(rows, columns) if c not in ("status", "run_dir", "error", "overrides", "train_hash", "wall_time_s")
             and any(r.get(c) is not None for r in done)]
    best = {m: _best(done, m) for m in (*METRICS, *BENCHMARK_METRICS) if m in shown}
    lines = [f"# Sweep report: {sweep_dir.name}", "",
             f"{len(jobs)} jobs: {len({r['job'] for r in done})} completed, {len({r['job'] for r in failed})} failed or missing. "
             f"Metrics in %; AUPR / AUROC / FPR95 pooled over test pixels (per_image_*: StreetHazards per-image protocol); "
             f"best value of each column in bold."
             + (" Test-only benchmarks: AP .. mean_F1 in the SMIYC leaderboard's convention (AP, FPR95, best_F1 pixel "
                "level; sIoU_gt, PPV, F1_t, mean_F1 components at best_F1_threshold); no mIoU."
                if any(r.get("AP") is not None for r in done) else ""), ""]
    common = common_overrides(rows, columns, names)
    if common:
        lines += [f"Overrides common to all jobs: `{' '.join(common)}`", ""]
    if done:
        lines.append("| " + " | ".join(_header(names.get(c, c)) for c in shown) + " |")
        lines.append("|" + "|".join("---:" if _is_metric(c) or c == "objective" else "---" for c in shown) + "|")
        for r in done:
            cells = []
            for c in shown:
                value = r.get(c)
                text = _cell(c, value)
                cells.append(f"**{text}**" if c in best and value is not None and value == best[c] else text)
            lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- job {r['job']} ({r['status']}): `{r.get('overrides') or '(no overrides)'}`: {r.get('error', '')}" for r in failed]
    if images:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images.values()]
    return "\n".join(lines) + "\n"


def sweep_table(rows: list[dict[str, Any]], columns: list[str], names: dict[str, str]):
    from rich.table import Table

    shown = [c for c in varying(rows, columns) if c not in ("run_dir", "error", "overrides", "train_hash", "wall_time_s", "objective_metric")
             and any(r.get(c) is not None for r in rows)]
    table = Table(title="sweep results (%)")
    for c in shown:
        table.add_column(_header(names.get(c, c)), justify="right" if _is_metric(c) or c == "objective" else "left")
    for r in rows:
        table.add_row(*[_cell(c, r.get(c)) for c in shown])
    return table


def report_sweep(sweep_dir: str | Path) -> dict[str, Path]:
    """Write the sweep report and print its table (what the Hydra callback and the CLI do)."""
    written = write_sweep_report(sweep_dir)
    if not written:
        say(f"[hazardseg] {sweep_dir}: no job folders, no sweep report")
        return written
    rows = json.loads(written["json"].read_text())
    columns, names = columns_of(rows)
    failed = sorted({r["job"] for r in rows if r["status"] != "completed"})
    say(render_table(sweep_table(rows, columns, names)))
    say(f"[hazardseg] sweep report: {written['md']} and {written['csv']} "
        f"({len({r['job'] for r in rows}) - len(failed)} completed, failed: {failed or 'none'})")
    return written


# ---------------------------------------------------------------------------- plots
def plot_sweep(sweep_dir: Path, rows: list[dict], columns: list[str], names: dict[str, str]) -> dict[str, Path]:
    """Bar charts of every metric, PR curves and the AUPR-vs-mIoU trade-off (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        return {}
    labels = [_label(r, varying(rows, columns), names) for r in done]
    written: dict[str, Path] = {}
    metrics = [m for m in (*ANOMALY, "miou") if any(r.get(m) is not None for r in done)]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 2, 0.35 * len(done) + 1.6), squeeze=False, sharey=True)
        for ax, metric in zip(axes[0], metrics):
            values = [100 * r[metric] if r.get(metric) is not None else 0.0 for r in done]
            colours = ["#2b8cbe" if metric not in LOWER_IS_BETTER else "#e34a33"] * len(done)
            ax.barh(range(len(done)), values, color=colours)
            for y, v in enumerate(values):
                ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
            ax.set_title(_header(metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=10)
            ax.set_xlim(0, 105)
        axes[0][0].set_yticks(range(len(done)), labels, fontsize=8)
        axes[0][0].invert_yaxis()  # first job on top (axes share y: invert once)
        figures.tight(fig)
        written["png_metrics"] = _save(fig, sweep_dir / "sweep_metrics.png")
    # panels per swept key (e.g. the method), scorers as colours: legible from 2x2 to 100 jobs (hazardseg.figures)
    keys = [c for c in varying(rows, columns) if c.startswith("override:") and names.get(c, c).removeprefix("override:") != "scorer"]
    keys += ["dataset"] if len({r.get("dataset") for r in done}) > 1 else []
    group, series = figures.split(done, keys, names)
    loaded = [(r, _curve(Path(r["run_dir"]), r["scorer"])) for r in done if r.get("scorer")]
    loaded = [(r, c) for r, c in loaded if c is not None]
    if loaded:
        written["png_pr_curves"] = _save(figures.pr_small_multiples(loaded, group, series), sweep_dir / "sweep_pr_curves.png")
    points = [r for r in done if r.get("miou") is not None and r.get("aupr") is not None]
    if points:
        written["png_tradeoff"] = _save(figures.tradeoff(points, group, series), sweep_dir / "sweep_tradeoff.png")
    return written


def save_curves(run_dir: Path, curves: dict[str, dict[str, Any]], max_points: int = 200) -> None:
    """PR curve points per scorer (downsampled) next to results.json, for the sweep's PR plot."""
    if not curves:
        return
    out = {}
    for name, curve in curves.items():
        n = len(curve["recall"])
        step = max(1, math.ceil(n / max_points))
        idx = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
        out[name] = {k: [_finite(float(curve[k][i])) for i in idx] for k in ("recall", "precision", "fpr", "tpr")}
    atomic_write_text(run_dir / CURVES_FILE, json.dumps(out) + "\n")


# ---------------------------------------------------------------------------- helpers
def _curve(run_dir: Path, scorer: str) -> dict | None:
    file = run_dir / CURVES_FILE
    if not file.is_file():
        return None
    curve = json.loads(file.read_text()).get(scorer)
    if not curve:
        return None
    keep = [i for i, (r, p) in enumerate(zip(curve["recall"], curve["precision"])) if r is not None and p is not None]
    return {k: [curve[k][i] for i in keep] for k in ("recall", "precision")}


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    signals.stop_point("report")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # legends outside the axes stay in the image
    plt.close(fig)
    return path


def _label(row: dict, columns: list[str], names: dict[str, str]) -> str:
    parts = [f"{names.get(c, c).removeprefix('override:')}={row[c]}" for c in columns
             if c.startswith("override:") and row.get(c) is not None and names.get(c, c).removeprefix("override:") != "scorer"]
    if row.get("scorer"):
        parts.append(str(row["scorer"]))
    return f"#{row['job']} " + " ".join(parts)


def _best(rows: list[dict], metric: str) -> float | None:
    values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float)) and not math.isnan(r[metric])]
    if not values:
        return None
    return min(values) if metric in LOWER_IS_BETTER else max(values)


def _is_metric(key: str) -> bool:
    # error bounds stay in results.json / scorers.csv / the W&B summary, out of the tables people read
    return key in METRICS or key in BENCHMARK_METRICS or key in THRESHOLDS or key == "test_miou" or key.endswith(ERROR_BOUND)


def _cell(column: str, value: Any) -> str:
    """A table cell: metrics in %, thresholds as numbers, anything else as text."""
    if column in THRESHOLDS:
        return "-" if value is None else f"{float(value):.4g}"
    if column in METRICS or column in BENCHMARK_METRICS or column == "objective":
        return _pct(value)
    return "" if value is None else str(value)


def _header(key: str) -> str:
    return {"miou": "mIoU", "aupr": "AUPR", "auroc": "AUROC", "fpr95": "FPR95", "per_image_aupr": "AUPR/img",
            "per_image_auroc": "AUROC/img", "per_image_fpr95": "FPR95/img",
            "FPR95": "FPR95 (SMIYC)"}.get(key, key)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.1f}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _override_pairs(job_dir: Path) -> dict[str, str]:
    pairs = {}
    for item in job_overrides(job_dir):
        key, sep, value = item.partition("=")
        if sep:
            pairs[key.lstrip("+~")] = value
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hazardseg.report", description="Markdown + CSV + plots of a multirun folder.")
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/train/multiruns/<date>")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir}: not a folder. Fix: give a multirun folder (it holds numbered job folders).")
        return 2
    return 0 if report_sweep(args.sweep_dir) else 1


if __name__ == "__main__":
    raise SystemExit(main())
