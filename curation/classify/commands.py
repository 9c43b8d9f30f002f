"""``curate classify DS --head name=PATH`` and ``curate train-head DS --label SQL --out head.safetensors``."""
from __future__ import annotations

from typing import Any, Optional

import typer

from curation.cli_config import Param, stage_command


def _summary(out: Any, st: dict[str, Any]) -> str:
    cols = ", ".join(f"{n}_score" for n in st.get("heads", {}))
    return f"{out.url}: version {out.version}, {cols} for {st.get('samples_out')} of {st.get('samples_in')} samples"


def _heads(args: dict[str, Any]) -> dict[str, Any]:
    from curation.classify.stage import parse_head_specs

    return {"heads": parse_head_specs(args["head"])} if args.get("head") else {}


classify = stage_command(
    "classify", summary=_summary, exclude=["heads"], extra_config=_heads,
    params=[Param("head", Optional[list[str]], typer.Option(None, "--head", metavar="NAME=PATH",
                  help="a head file scored into NAME_score (LAION aesthetic .pth, NeMo NSFW .pth, or a "
                       "train-head .safetensors); repeatable"))],
    doc="Score stored embeddings with classifier heads (<name>_score columns; no image decoding).")


def train_head(
    dataset: str = typer.Argument(..., help="a scored dataset (with embeddings)"),
    out: str = typer.Option(..., "--out", help="where to write the head (.safetensors)"),
    label: Optional[str] = typer.Option(None, "--label",
                                        help="SQL expression over samples: true = positive, NULL = unlabelled"),
    labels: Optional[str] = typer.Option(None, "--labels", help="a Parquet/CSV file with uid and label columns"),
    kind: str = typer.Option("linear", "--kind", help="linear (a probe) or mlp (one hidden layer)"),
    hidden: int = typer.Option(64, help="MLP hidden width"),
    holdout: float = typer.Option(0.3, help="fraction of labelled rows held out for the printed metrics"),
    epochs: int = typer.Option(300, help="full-batch training epochs"),
    seed: int = typer.Option(0, help="seeds the split and the initialisation"),
) -> None:
    """Train a linear probe or small MLP on stored embeddings; print held-out precision, recall, ROC AUC."""
    from curation.classify.train import train_head as run

    res = run(dataset, out=out, label=label, labels=labels, kind=kind, hidden=hidden, holdout=holdout,  # type: ignore[arg-type]
              epochs=epochs, seed=seed)
    typer.echo(f"{res['out']}: held-out precision {res['precision']:.3f} recall {res['recall']:.3f} "
               f"ROC AUC {res['roc_auc']:.3f} at threshold {res['threshold']:.3f} "
               f"({res['train']} train / {res['held_out']} held-out rows, {res['positives']} positive)")
