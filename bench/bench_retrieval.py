"""Retrieval-caption accuracy of a filter CLIP recipe: the demo's (``curation.demo.FILTER_MODEL`` with
dihedral augmentation and web copies) against session 1's (the ViT ``curation-tiny``, no
augmentation), same seed pairs, same steps, same run.

Each recipe trains on a fresh synthetic seed set, then captions the held-out clean eval pairs by
exact top-1 retrieval over ``synth.caption_bank()``; prints exact accuracy, per-attribute
accuracy (count, colour, shape, background), training seconds and the ratio of exact accuracies.

    python bench/bench_retrieval.py [--steps 1500] [--seed-pairs 10000] [--views dihedral]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from curation import demo
from curation.augment import Views, views
from curation.caption.retrieval import build_bank, retrieve
from curation.models import load_clip
from curation.synth import caption_bank, generate
from curation.train.data import build_cache
from curation.train.seed import train_seed_clip

RECIPES = {  # name: (architecture, lr, augment, web copies)
    f"demo ({demo.FILTER_MODEL} + dihedral augmentation + web copies)":
        (demo.FILTER_MODEL, demo.FILTER_LR, True, demo.FILTER_WEB_COPIES),
    "session 1 (curation-tiny ViT)": ("curation-tiny", 2e-3, False, 0),
}


def attributes(caption: str) -> tuple[str, str, str, str]:
    """(count, colour, shape, background) of a synthetic caption ("two red circles on a ...")."""
    w = caption.split()
    shape = w[2][:-2] if w[2].endswith("sses") else w[2] if w[2].endswith("ss") else w[2].rstrip("s")
    return w[0], w[1], shape, w[5]


def evaluate(folder: str, arch: str, eval_table, kind: Views) -> dict:
    m = load_clip(arch, folder)
    cache = build_cache(eval_table, m.preprocess, m.tokenizer)
    bank = build_bank(m.model, m.tokenizer, caption_bank())
    with torch.no_grad():
        embs = [F.normalize(m.model.encode_image(v), dim=-1) for v in views(cache.images, kind)]
    top, _ = retrieve(bank, F.normalize(torch.stack(embs).mean(0), dim=-1))
    pred = [bank.texts[i] for i in top[:, 0].tolist()]
    n = len(pred)
    out = {"exact": sum(p == t for p, t in zip(pred, cache.captions)) / n}
    for k, name in enumerate(("count", "colour", "shape", "background")):
        out[name] = sum(attributes(p)[k] == attributes(t)[k] for p, t in zip(pred, cache.captions)) / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed-pairs", type=int, default=10000)
    ap.add_argument("--views", default="none", choices=["none", "flip", "dihedral"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "synth")
        generate(corpus, samples=20, seed=0, seed_samples=args.seed_pairs)
        pairs = pq.read_table(os.path.join(corpus, "seed.parquet"), columns=["image", "caption"])
        eval_table = pq.read_table(os.path.join(corpus, "eval.parquet"))
        results = {}
        for name, (arch, lr, augment, copies) in RECIPES.items():
            t = time.perf_counter()
            folder = train_seed_clip(pairs, out_dir=os.path.join(tmp, arch), model=arch, steps=args.steps,
                                     batch_size=256, lr=lr, augment=augment, seed=0, log_every=0,
                                     web_copies=copies)
            results[name] = {"train_s": round(time.perf_counter() - t, 1),
                             **{k: round(v, 3) for k, v in evaluate(folder, arch, eval_table, args.views).items()}}
            print(name, json.dumps(results[name]), flush=True)
    demo, base = (results[k]["exact"] for k in RECIPES)
    print(f"exact retrieval over {len(caption_bank())} captions, {eval_table.num_rows} eval pairs, "
          f"{args.steps} steps, views {args.views}: demo recipe {demo:.3f} vs session 1 {base:.3f} "
          f"({demo / max(base, 1e-9):.2f}x)")


if __name__ == "__main__":
    main()
