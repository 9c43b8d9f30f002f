"""``curate report``: the CLI wrapper over :func:`curation.report.build_report`."""
from __future__ import annotations

import typer

from curation.report.build import build_report


def report(
    source: str = typer.Argument(..., help="Dataset root (manifest.json) or run folder (run.json)."),
    out: str = typer.Option("report.html", "--out", "-o", help="Where to write the HTML page."),
    truth: str = typer.Option(None, "--truth", help="Ground-truth Parquet (curate synth's truth.parquet) "
                                                     "for precision/recall of each removal kind."),
    max_examples: int = typer.Option(8, "--max-examples", min=1, help="Thumbnails per grid."),
) -> None:
    """Write a self-contained HTML report: funnel, scores, samples, duplicates, captions, throughput, forgetting."""
    path = build_report(source, out, truth=truth, max_examples=max_examples)
    typer.echo(f"wrote {path}")
