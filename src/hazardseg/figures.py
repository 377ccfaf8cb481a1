"""The sweep report's figures, legible from a 2x2 to a 100-job sweep (matplotlib, Agg backend).

A sweep's rows are (job, scorer) pairs. Figures split them the way people read an ablation:

* **groups** (one panel each): the swept keys other than the scorer, e.g. ``loss=meta_ood`` (and the dataset
  when a benchmark sweep varies it); when only one scorer was run, the first swept key makes the panels and the
  others the series;
* **series** (one colour each, the same colour in every panel, one legend outside the axes): the scorers.

``sweep_pr_curves.png`` is small multiples of PR curves, the best series of each panel (highest AUPR) drawn thick
and named in the panel's title. ``sweep_tradeoff.png`` puts AUPR against test mIoU, coloured by group and marked
by series, the best series of each group ringed, and only the Pareto-optimal points (no other point has both a
higher mIoU and a higher AUPR) labelled, so that 100 points stay readable.
"""

from __future__ import annotations

import math
from typing import Any, Callable

MARKERS = "os^Dv<>Ph*Xd"


def split(rows: list[dict], keys: list[str], names: dict[str, str]) -> tuple[Callable[[dict], str], Callable[[dict], str]]:
    """(group of a row, series of a row) for the swept ``keys`` (override columns that vary, plus ``dataset``)."""
    def label(row: dict, cols: list[str]) -> str:
        return " ".join(f"{names.get(c, c).removeprefix('override:')}={row.get(c)}" for c in cols) or "all jobs"

    scorers = {r.get("scorer") for r in rows if r.get("scorer")}
    if len(scorers) > 1 or not keys:
        return (lambda r: label(r, keys)), (lambda r: str(r.get("scorer") or label(r, keys)))
    return (lambda r: label(r, keys[:1])), (lambda r: label(r, keys[1:]) if keys[1:] else str(r.get("scorer") or "job"))


def colours_for(series: list[str]) -> dict[str, Any]:
    """One colour per series, stable across panels (tab10, then tab20 for more than 10 series)."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(series) <= 10 else "tab20"]
    return {s: palette(i % palette.N) for i, s in enumerate(series)}


def pr_small_multiples(curves: list[tuple[dict, dict]], group: Callable, series: Callable):
    """``curves``: (row, {"recall", "precision"}) per (job, scorer). One panel per group; returns the figure."""
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(group(r) for r, _ in curves))
    names = list(dict.fromkeys(series(r) for r, _ in curves))
    colour = colours_for(names)
    cols = min(len(groups), 4)
    rows_n = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.3 * cols, 2.9 * rows_n + 0.6), squeeze=False, sharex=True, sharey=True)
    for ax, name in zip(axes.flat, groups):
        members = [(r, c) for r, c in curves if group(r) == name]
        best = max(members, key=lambda m: m[0].get("aupr") if m[0].get("aupr") is not None else -1)[0]
        for row, curve in members:
            is_best = row is best
            ax.plot(curve["recall"], curve["precision"], color=colour[series(row)], linewidth=2.6 if is_best else 1.1,
                    alpha=1.0 if is_best else 0.75, zorder=3 if is_best else 2)
        aupr = best.get("aupr")
        ax.set_title(_shorten(name, 38) + (f"\nbest: {series(best)} (AUPR {100 * aupr:.1f})" if aupr is not None else ""), fontsize=8)
        ax.grid(alpha=0.3)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
    for i, ax in enumerate(axes.flat):
        if i >= len(groups):
            ax.set_visible(False)
        elif i + cols >= len(groups):  # the lowest panel of its column: its x axis is labelled
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    handles = [plt.Line2D([], [], color=colour[s], linewidth=2) for s in names]
    fig.legend(handles, [_shorten(s, 28) for s in names], loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title="scorer" if len(names) > 1 else None, frameon=False)
    fig.suptitle("PR curves on the test split (thick: the best of each panel)", fontsize=10)
    tight(fig)
    return fig


def tradeoff(points: list[dict], group: Callable, series: Callable):
    """AUPR vs test mIoU of every (job, scorer) row with both; returns the figure."""
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(group(r) for r in points))
    names = list(dict.fromkeys(series(r) for r in points))
    colour, marker = colours_for(groups), {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    xy = [(100 * r["miou"], 100 * r["aupr"]) for r in points]
    for row, (x, y) in zip(points, xy):
        ax.scatter(x, y, s=42, color=colour[group(row)], marker=marker[series(row)], zorder=3, linewidths=0)
    for name in groups:  # the best series of each group: ringed
        best = max((i for i, r in enumerate(points) if group(r) == name), key=lambda i: xy[i][1])
        ax.scatter(*xy[best], s=150, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    front = sorted(pareto_front(xy), key=lambda i: xy[i])
    fx, fy = zip(*(xy[i] for i in front))
    ax.plot(fx, fy, linestyle="--", color="0.3", linewidth=1, zorder=2, drawstyle="steps-post" if len(front) > 1 else "default")
    key = []  # front points get a number on the plot and their name in a list below it: never overlapping labels
    for n, i in enumerate(front, 1):
        ax.annotate(str(n), xy[i], fontsize=8, fontweight="bold", xytext=(6, 3), textcoords="offset points", zorder=5)
        name = f"{group(points[i])} {series(points[i])}" if len(groups) > 1 else series(points[i])
        key.append(f"{n}: {_shorten(name, 60)} (mIoU {xy[i][0]:.1f}, AUPR {xy[i][1]:.1f})")
    ax.set(xlabel="test mIoU (%)", ylabel="AUPR (%)", title="anomaly detection vs segmentation quality "
           "(dashed: Pareto front, numbered; ringed: best of its group)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.text(0.0, -0.12, "Pareto front:\n" + "\n".join(key), transform=ax.transAxes, fontsize=7, va="top")
    tight(fig)
    group_handles = [plt.Line2D([], [], color=colour[g], marker="o", linestyle="", markersize=7) for g in groups]
    series_handles = [plt.Line2D([], [], color="0.3", marker=marker[s], linestyle="", markersize=7) for s in names]
    first = fig.legend(group_handles, [_shorten(g, 30) for g in groups], loc="upper left", bbox_to_anchor=(1.0, 0.98),
                       fontsize=7, title="colour", title_fontsize=8, frameon=False)
    fig.add_artist(first)
    if len(names) > 1:
        fig.legend(series_handles, [_shorten(s, 30) for s in names], loc="lower left", bbox_to_anchor=(1.0, 0.02),
                   fontsize=7, title="marker", title_fontsize=8, frameon=False)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher is better for both)."""
    return [i for i, (x, y) in enumerate(points)
            if not any((ox >= x and oy >= y) and (ox > x or oy > y) for ox, oy in points)]


def tight(fig) -> None:
    import warnings

    with warnings.catch_warnings():  # very long labels: keep the plot, skip the warning
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
