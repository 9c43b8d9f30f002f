"""``curate score DS`` and ``curate search DS "text"``."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer


def _progress(done: int, total: int, samples: int) -> None:
    print(f"\rscored shards {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def score(
    dataset: str = typer.Argument(..., help="dataset root (local path or fsspec URL)"),
    model: str = typer.Option("ViT-B-32", help="open_clip model, hf-hub:org/name, or checkpoint folder"),
    pretrained: Optional[str] = typer.Option(None, help="open_clip pretrained tag, weights file or checkpoint folder"),
    batch_size: int = typer.Option(256, help="samples per forward pass"),
    device: str = typer.Option("auto", help="auto, cpu or cuda (auto: GPUs when the Ray cluster has them)"),
    precision: str = typer.Option("auto", help="auto, fp32 or bf16 (auto: bf16 on GPU)"),
    decode: str = typer.Option("auto", help="auto, pil or torch (auto: torch/nvjpeg on GPU)"),
    draft: bool = typer.Option(True, help="Pillow draft mode for JPEGs (faster decode)"),
    actors: Optional[int] = typer.Option(None, help="actor-pool size (default: one per GPU, or CPUs/2)"),
    threads_per_actor: int = typer.Option(1, help="torch threads per CPU actor"),
) -> None:
    """CLIP embeddings + clip_score for every successful sample (new metadata version + emb/)."""
    from curation.io import Dataset
    from curation.runner.stage import StageContext
    from curation.score.stage import ScoreStage

    stage = ScoreStage({"model": model, "pretrained": pretrained, "batch_size": batch_size, "device": device,
                        "precision": precision, "decode": decode, "draft": draft, "actors": actors,
                        "threads_per_actor": threads_per_actor})
    ds = Dataset(dataset)
    ctx = StageContext(output=dataset, progress=_progress)
    out = stage(ds, ctx)
    st = ctx.stats.to_dict()
    typer.echo(f"{out.url}: version {out.version}, scored {st['samples_out']} of {st['samples_in']} samples "
               f"with {out.embeddings['model']} ({st['seconds']:.1f}s, errors {st['dropped'].get('score_error', 0)})")


def search(
    dataset: str = typer.Argument(..., help="a scored dataset"),
    text: str = typer.Argument(..., help="the query, e.g. 'a red circle'"),
    k: int = typer.Option(20, "--k", "-k", help="number of results"),
    pretrained: Optional[str] = typer.Option(None, help="checkpoint to embed the query with "
                                             "(default: the model named in the dataset's manifest)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
) -> None:
    """Text-to-image search: rank samples by cosine of their image embedding to TEXT."""
    from curation.io import Dataset
    from curation.score.search import search as run_search

    hits = run_search(Dataset(dataset), text, k, pretrained=pretrained)
    for h in hits:
        if as_json:
            typer.echo(json.dumps(h))
        else:
            typer.echo(f"{h['rank']:>3}  {h['score']:.4f}  {h['uid']}  {h.get('caption')!r}")
