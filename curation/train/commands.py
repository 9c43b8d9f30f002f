"""``curate train RUN.yaml``: a continual CLIP run (local, torchrun or Ray Train)."""
from __future__ import annotations

from pathlib import Path

import typer


def train(spec: Path = typer.Argument(..., help="run spec (YAML): slices, model, replay, loss, schedule"),
          out: str = typer.Option(None, "--out", help="override the spec's output folder"),
          steps: int = typer.Option(None, "--steps", help="override steps_per_slice"),
          backend: str = typer.Option(None, "--backend", help="local | torchrun | ray")) -> None:
    """Train a CLIP over time slices, evaluate every slice after each, print the forgetting matrix.

    Rerunning with the same spec and output resumes a killed run at the exact step.
    """
    from curation.train.metrics import format_matrix
    from curation.train.run import load_run_config
    from curation.train.trainer import launch

    overrides = {k: v for k, v in {"out": out, "steps_per_slice": steps, "backend": backend}.items() if v is not None}
    cfg = load_run_config(str(spec), overrides)
    summary = launch(cfg)
    import json
    import os

    rows = json.load(open(os.path.join(cfg.out, "eval_rows.json")))
    names = [s.name for s in cfg.slices]
    for metric in ("i2t_r1", "zeroshot_acc"):
        if metric in summary:
            typer.echo(format_matrix(rows, names, metric))
            s = summary[metric]
            typer.echo(f"  mean forgetting {s['mean_forgetting']:.3f}  backward transfer {s['backward_transfer']:.3f}"
                       f"  forward transfer {s['forward_transfer']:.3f}")
    typer.echo(f"wrote {cfg.out}/metrics.parquet, summary.json, heatmap.png")
