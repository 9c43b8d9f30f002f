"""``curate dedup DS``: the dedup stage from the command line."""
from __future__ import annotations

import json
from typing import Optional

import typer


def dedup(
    dataset: str = typer.Argument(..., help="dataset root (local path or fsspec URL)"),
    methods: Optional[str] = typer.Option(None, help="comma list of exact,phash,semantic "
                                          "(default: exact,phash + semantic when embeddings exist)"),
    phash_radius: int = typer.Option(4, help="Hamming radius (of 64 bits) for pHash near duplicates"),
    eps: float = typer.Option(0.05, help="SemDeDup: duplicate when cosine > 1 - eps"),
    n_clusters: Optional[int] = typer.Option(None, help="k-means clusters (default ceil(N / cluster-size))"),
    cluster_size: int = typer.Option(1000, help="target cluster size when --n-clusters is not given"),
    niter: int = typer.Option(20, help="k-means iterations"),
    sample_size: int = typer.Option(100_000, help="points k-means is trained on"),
    keep: str = typer.Option("hard", help="SemDeDup keep order: hard, easy or random"),
    seed: int = typer.Option(0, help="seed for k-means sampling and keep=random"),
    eval_set: Optional[str] = typer.Option(None, help="evaluation set to decontaminate against (.npy, .parquet, image folder)"),
    eval_model: Optional[str] = typer.Option(None, help="model to embed an eval image folder with"),
    eval_pretrained: Optional[str] = typer.Option(None, help="weights for --eval-model"),
) -> None:
    """Flag exact, perceptual and semantic duplicates (adds phash, dup_of, dedup_reason)."""
    from curation.dedup.stage import DedupStage
    from curation.io import Dataset
    from curation.runner.stage import StageContext

    config = {"phash_radius": phash_radius, "eps": eps, "n_clusters": n_clusters, "cluster_size": cluster_size,
              "niter": niter, "sample_size": sample_size, "keep": keep, "seed": seed, "eval_set": eval_set,
              "eval_model": eval_model, "eval_pretrained": eval_pretrained}
    if methods:
        config["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    stage = DedupStage(config)  # validates: ConfigError names the key and value
    ds = Dataset(dataset)
    ctx = StageContext(output=dataset)
    out = stage(ds, ctx)
    stats = ctx.stats.to_dict()
    typer.echo(f"{out.url}: version {out.version}, removed {json.dumps(stats['dedup']['removed'])} "
               f"of {stats['samples_in']} samples ({stats['seconds']:.1f}s)")
