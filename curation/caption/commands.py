"""``curate caption DS``: synthetic captions (CoCa or retrieval) + the mixing policy."""
from __future__ import annotations

import sys
from typing import Optional

import typer


def _progress(done: int, total: int, samples: int) -> None:
    print(f"\rcaptioned shards {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def caption(
    dataset: str = typer.Argument(..., help="dataset root (local path or fsspec URL)"),
    method: str = typer.Option("coca", help="coca (generate with a CoCa model) or retrieval (best text of a bank)"),
    model: str = typer.Option("coca_ViT-L-14", help="CoCa model: open_clip name, hf-hub:org/name or checkpoint folder"),
    pretrained: Optional[str] = typer.Option("mscoco_finetuned_laion2b_s13b_b90k", help="CoCa pretrained tag, file or folder"),
    decoding: str = typer.Option("greedy", help="greedy, sample or beam"),
    max_new_tokens: int = typer.Option(30, help="longest caption in tokens"),
    min_new_tokens: int = typer.Option(4, help="end-of-text is forbidden before this many tokens"),
    temperature: float = typer.Option(1.0, help="sampling temperature"),
    top_k: int = typer.Option(0, help="sampling: keep the k most likely tokens (0: all)"),
    top_p: float = typer.Option(1.0, help="sampling: nucleus mass (1: all)"),
    num_beams: int = typer.Option(3, help="beam search width"),
    seed: int = typer.Option(0, help="sampling seed"),
    bank: str = typer.Option("synth", help="retrieval candidates: 'synth' or a text file, one caption per line"),
    classes: Optional[str] = typer.Option(None, help="class labels ('synth' or a file) for --restrict-to-class"),
    restrict_to_class: bool = typer.Option(False, help="retrieve only among candidates of the predicted class"),
    views: str = typer.Option("none", help="retrieval test-time views: none, flip or dihedral (8 symmetries)"),
    clip_model: Optional[str] = typer.Option(None, help="scoring CLIP (default: the dataset's score model)"),
    clip_pretrained: Optional[str] = typer.Option(None, help="scoring CLIP weights"),
    threshold: float = typer.Option(0.28, help="CLIP rule: a pair passes when its score >= threshold"),
    mode: str = typer.Option("mix", help="mix (raw if it passes, else synthetic if it passes) or both"),
    batch_size: int = typer.Option(64, help="images per forward pass"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Add synthetic_caption, synthetic_clip_score and caption_source (new metadata version)."""
    from curation.caption.stage import CaptionStage
    from curation.io import Dataset
    from curation.runner.stage import StageContext

    stage = CaptionStage({
        "method": method, "model": model, "pretrained": pretrained, "decoding": decoding,
        "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens, "temperature": temperature,
        "top_k": top_k, "top_p": top_p, "num_beams": num_beams, "seed": seed, "bank": bank,
        "classes": classes, "restrict_to_class": restrict_to_class, "views": views, "clip_model": clip_model,
        "clip_pretrained": clip_pretrained, "threshold": threshold, "mode": mode,
        "batch_size": batch_size, "device": device})
    ds = Dataset(dataset)
    ctx = StageContext(output=dataset, progress=_progress)
    out = stage(ds, ctx)
    st = ctx.stats.to_dict()
    sources = ", ".join(f"{k} {v}" for k, v in sorted(st.get("caption_source", {}).items()))
    typer.echo(f"{out.url}: version {out.version}, captioned {st['samples_in']} samples "
               f"({st['seconds']:.1f}s); caption_source: {sources}")
