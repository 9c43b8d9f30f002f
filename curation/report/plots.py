"""Matplotlib figures of the report, returned as ``data:`` URIs (self-contained SVG).

Figures are built with :class:`matplotlib.figure.Figure` directly, not pyplot, so no
global backend state or open-figure registry is touched (safe in servers and tests).
Text stays text in the SVG (``svg.fonttype = none``): crisp, small and searchable.
"""
from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.figure import Figure

from curation.report.analysis import Forgetting, Funnel, label_of, stage_of

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

STAGE_COLORS = {"download": "#d9822b", "dedup": "#8f5fbf", "filter": "#d64545", "kept": "#2f9e6f"}
KEPT_COLOR, REMOVED_COLOR, ACCENT = "#2f9e6f", "#d64545", "#3b6fd4"
_RC: dict[RcKeyType, Any] = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#9aa3ad",
       "axes.labelcolor": "#39424e", "xtick.color": "#5b6571", "ytick.color": "#5b6571"}


def to_data_uri(fig: Figure) -> str:
    """Serialise a figure as an SVG ``data:`` URI."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(w: float, h: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(w, h), layout="constrained")


def funnel_plot(f: Funnel) -> str:
    """Left: samples remaining after each stage. Right: removals by reason, coloured by stage."""
    with matplotlib.rc_context(_RC):
        fig = _fig(9.5, max(2.6, 0.28 * len(f.by_reason) + 1.2))
        left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
        names = [n for n, _ in f.steps][::-1]
        vals = [v for _, v in f.steps][::-1]
        colors = [KEPT_COLOR] + ["#7d8ea3"] * (len(vals) - 1)
        left.barh(names, vals, color=colors)
        for y, v in enumerate(vals):
            pct = 100.0 * v / f.total if f.total else 0.0
            left.text(v, y, f"  {v:,} ({pct:.0f}%)", va="center", fontsize=8)
        left.set_xlim(0, max(vals + [1]) * 1.45)
        left.set_title("samples remaining", loc="left")
        if f.by_reason:
            labels = [f"{stage_of(c)}: {label_of(c)}" for c, _ in f.by_reason][::-1]
            counts = [n for _, n in f.by_reason][::-1]
            right.barh(labels, counts, color=[STAGE_COLORS[stage_of(c)] for c, _ in f.by_reason][::-1])
            for y, v in enumerate(counts):
                right.text(v, y, f" {v:,}", va="center", fontsize=8)
            right.set_xlim(0, max(counts) * 1.2)
        else:
            right.text(0.5, 0.5, "nothing removed", ha="center", va="center", transform=right.transAxes)
            right.set_axis_off()
        right.set_title("removed, by reason", loc="left")
        return to_data_uri(fig)


def score_histogram(kept: list[float], removed: list[float], *, title: str,
                    threshold: float | None = None, labels: tuple[str, str] = ("kept", "removed")) -> str:
    """Overlaid histograms of two score populations, with an optional threshold line."""
    with matplotlib.rc_context(_RC):
        fig = _fig(6.2, 2.8)
        ax = fig.subplots()
        allv = kept + removed
        lo, hi = (min(allv), max(allv)) if allv else (0.0, 1.0)
        if math.isclose(lo, hi):
            lo, hi = lo - 0.05, hi + 0.05
        bins = [lo + (hi - lo) * i / 30 for i in range(31)]
        for vals, color, name in ((kept, KEPT_COLOR, labels[0]), (removed, REMOVED_COLOR, labels[1])):
            if vals:
                ax.hist(vals, bins=bins, color=color, alpha=0.55, label=f"{name} (n={len(vals):,})")
        if threshold is not None:
            ax.axvline(threshold, color="#39424e", linestyle="--", linewidth=1)
            ax.text(threshold, ax.get_ylim()[1] * 0.95, f" threshold {threshold:g}", fontsize=8, va="top")
        ax.set_xlabel("CLIP score (cosine)")
        ax.set_ylabel("samples")
        ax.set_title(title, loc="left")
        ax.legend(frameon=False)
        return to_data_uri(fig)


def forgetting_heatmap(fg: Forgetting) -> str:
    """Heat map of the train-slice × eval-slice matrix, values annotated."""
    with matplotlib.rc_context(_RC):
        fig = _fig(1.2 + 1.05 * len(fg.evals), 1.0 + 0.6 * len(fg.train))
        ax = fig.subplots()
        data = [[float("nan") if v is None else v for v in row] for row in fg.matrix]
        finite = [v for row in data for v in row if not math.isnan(v)]
        vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
        im = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9,
                       aspect="auto")
        ax.set_xticks(range(len(fg.evals)), fg.evals)
        ax.set_yticks(range(len(fg.train)), fg.train)
        ax.set_xlabel("evaluated on slice")
        ax.set_ylabel("after training on slice")
        mid = (vmin + vmax) / 2
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if v > mid else "white")
        ax.set_title(fg.metric, loc="left")
        fig.colorbar(im, ax=ax, shrink=0.85)
        return to_data_uri(fig)
