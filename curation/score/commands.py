"""``curate score DS`` (generated from :class:`~curation.score.stage.ScoreConfig`) and ``curate search DS "text"``."""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from curation.cli_config import stage_command, storage_options_from


def _summary(out: Any, st: dict[str, Any]) -> str:
    model = (out.embeddings or {}).get("model", "?")
    return (f"{out.url}: version {out.version}, scored {st.get('samples_out')} of {st.get('samples_in')} samples "
            f"with {model} ({st.get('seconds', 0):.1f}s, errors {st.get('dropped', {}).get('score_error', 0)})")


score = stage_command("score", summary=_summary,
                      doc="CLIP embeddings + clip_score for every successful sample (new metadata version + emb/).")


def search(
    dataset: str = typer.Argument(..., help="a scored dataset"),
    text: str = typer.Argument(..., help="the query, e.g. 'a red circle'"),
    k: int = typer.Option(20, "--k", "-k", help="number of results"),
    pretrained: Optional[str] = typer.Option(None, help="checkpoint to embed the query with "
                                             "(default: the model named in the dataset's manifest)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
    storage_option: Optional[list[str]] = typer.Option(None, "--storage-option", metavar="KEY=VALUE",
                                                       help="fsspec storage option (repeatable)"),
    endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint (short for --storage-option endpoint_url=)"),
) -> None:
    """Text-to-image search: rank samples by cosine of their image embedding to TEXT."""
    from curation.io import Dataset
    from curation.score.search import search as run_search

    ds = Dataset(dataset, storage_options_from(storage_option, endpoint_url) or None)
    hits = run_search(ds, text, k, pretrained=pretrained)
    for h in hits:
        if as_json:
            typer.echo(json.dumps(h))
        else:
            typer.echo(f"{h['rank']:>3}  {h['score']:.4f}  {h['uid']}  {h.get('caption')!r}")
