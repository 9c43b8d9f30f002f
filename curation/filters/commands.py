"""``curate filter DS``: keep/reasons from SQL and named rule sets."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer


def filter_cmd(
    dataset: str = typer.Argument(..., help="dataset root (local path or fsspec URL)"),
    where: Optional[str] = typer.Option(None, help="DuckDB predicate over samples, e.g. \"clip_score >= 0.3\""),
    rule: List[str] = typer.Option([], "--rule", help="named rule set: datacomp_basic or align (repeatable)"),
    clip_threshold: Optional[float] = typer.Option(None, help="keep clip_score >= T (LAION ViT-B/32: 0.28)"),
    top_fraction: Optional[float] = typer.Option(None, help="keep the top fraction F by clip_score over the whole dataset"),
    english: bool = typer.Option(True, help="DataComp basic's English-caption rule (py3langid)"),
    drop_duplicates: bool = typer.Option(True, help="drop rows the dedup stage marked"),
) -> None:
    """Add keep + reasons (every failed rule named) as a new metadata version; tars are untouched."""
    from curation.filters.stage import FilterStage
    from curation.io import Dataset
    from curation.runner.stage import StageContext

    stage = FilterStage({"where": where, "rules": list(rule), "clip_threshold": clip_threshold,
                         "clip_top_fraction": top_fraction, "english": english,
                         "drop_duplicates": drop_duplicates})
    ds = Dataset(dataset)
    ctx = StageContext(output=dataset, progress=lambda d, t, n: print(f"\rfiltered shards {d}/{t}", end="" if d < t else "\n",
                                                                       file=sys.stderr, flush=True))
    out = stage(ds, ctx)
    st = ctx.stats.to_dict()
    top = ", ".join(f"{k} {v}" for k, v in sorted(st["dropped"].items(), key=lambda kv: -kv[1])[:8])
    typer.echo(f"{out.url}: version {out.version}, keep {st['samples_out']} of {st['samples_in']} ({top})")
