"""The train-slice x eval-slice matrix: forgetting, backward/forward transfer, heat map.

Rows are evaluation records ``{train_index, train_slice, eval_index, eval_slice, metric,
value}``; ``train_index = -1`` is the model before any slice (for forward transfer).
For a metric matrix ``A[i][j]`` (after training slice i, evaluated on slice j), T slices:

- forgetting of slice j (j < T-1) = max over i in [j, T-2] of A[i][j] - A[T-1][j]
- backward transfer = mean over j < T-1 of A[T-1][j] - A[j][j]
- forward transfer = mean over j > 0 of A[j-1][j] - A[-1][j] (the untrained model)
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def matrix(rows: list[dict[str, Any]], metric: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(``A`` of shape [n, n], initial row of shape [n]) for ``metric`` (nan where missing)."""
    a, init = np.full((n, n), np.nan), np.full(n, np.nan)
    for r in rows:
        if r["metric"] != metric:
            continue
        if r["train_index"] < 0:
            init[r["eval_index"]] = r["value"]
        else:
            a[r["train_index"], r["eval_index"]] = r["value"]
    return a, init


def transfer_summary(a: np.ndarray, init: np.ndarray) -> dict[str, Any]:
    """Forgetting per earlier slice, its mean, backward and forward transfer for one matrix."""
    t = a.shape[0]
    forgetting = [float(np.nanmax(a[j:t - 1, j]) - a[t - 1, j]) for j in range(t - 1)]
    bwt = [float(a[t - 1, j] - a[j, j]) for j in range(t - 1)]
    fwt = [float(a[j - 1, j] - init[j]) for j in range(1, t)]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"forgetting": forgetting, "mean_forgetting": mean(forgetting), "backward_transfer": mean(bwt),
            "forward_transfer": mean(fwt), "final_mean": float(np.nanmean(a[t - 1]))}


def write_metrics(out: str, rows: list[dict[str, Any]], names: list[str], *, plot_metric: str = "i2t_r1") -> dict:
    """Write ``metrics.parquet`` (rows + per-metric forgetting/transfer columns), ``summary.json``
    and ``heatmap.png``; returns the summary ``{metric: transfer_summary}``."""
    n = len(names)
    metrics = sorted({r["metric"] for r in rows})
    summary = {m: transfer_summary(*matrix(rows, m, n)) for m in metrics} if n else {}
    table = pa.Table.from_pylist(rows)
    if n > 1:  # forgetting of the eval slice under that metric (null for the last slice)
        forg = [summary[r["metric"]]["forgetting"][r["eval_index"]] if r["eval_index"] < n - 1 else None
                for r in rows]
        table = table.append_column("forgetting", pa.array(forg, pa.float64()))
    pq.write_table(table, os.path.join(out, "metrics.parquet"))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"slices": names, "metrics": summary}, f, indent=1)
    if plot_metric in metrics:
        heatmap(matrix(rows, plot_metric, n)[0], names, plot_metric, os.path.join(out, "heatmap.png"))
    return summary


def heatmap(a: np.ndarray, names: list[str], metric: str, path: str) -> None:
    """Train-slice (rows) x eval-slice (columns) heat map with values printed in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("evaluated on slice")
    ax.set_ylabel("after training slice")
    ax.set_title(metric)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isnan(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", color="w" if a[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_matrix(rows: list[dict[str, Any]], names: list[str], metric: str) -> str:
    """A plain-text matrix for terminals and reports."""
    a, init = matrix(rows, metric, len(names))
    width = max(8, *(len(n) + 1 for n in names))
    lines = [f"{metric:<12}" + "".join(f"{n:>{width}}" for n in names),
             f"{'(init)':<12}" + "".join(f"{v:>{width}.3f}" for v in init)]
    for i, name in enumerate(names):
        lines.append(f"{name:<12}" + "".join(f"{v:>{width}.3f}" for v in a[i]))
    return "\n".join(lines)
