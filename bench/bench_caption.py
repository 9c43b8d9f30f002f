"""Greedy CoCa captioning: our key/value-cached decoder vs open_clip's way (re-running the
whole prefix every step, as ``CoCa.generate`` does), same model, same images, same run.

Prints img/s of both, the ratio, and whether the tokens are identical. Target (issue 8):
identical tokens and >= 4x for 30-token captions. CPU, small CoCa config, random weights.

    python bench/bench_caption.py [--batch 16] [--tokens 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from curation.caption.coca import CachedCoca, randomize_, reference_greedy
from curation.caption.search import DecodeOptions, generate
from curation.models import load_clip

SOT, EOT = 49406, 49407


def timed(fn, repeats: int) -> tuple[float, Any]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="curation-tiny-coca")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_clip(args.model)
    model = loaded.model
    randomize_(model, seed=0, std=0.1)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    # no end-of-text: every caption is exactly --tokens long, as in the anchor measurement
    with torch.no_grad():
        model.text_decoder.text_projection[:, EOT] = -10.0 * model.text_decoder.text_projection.abs().max()
    coca = CachedCoca(model)
    opts = DecodeOptions(max_new_tokens=args.tokens)
    with torch.inference_mode():
        generate(coca, images[:2], sot=SOT, eot=EOT, opts=opts)  # warm-up
        t_ref, ref = timed(lambda: reference_greedy(model, images, sot=SOT, eot=EOT, max_new_tokens=args.tokens),
                           args.repeats)
        t_kv, kv = timed(lambda: generate(coca, images, sot=SOT, eot=EOT, opts=opts), args.repeats)
    result = {
        "bench": "caption_greedy", "model": args.model, "batch": args.batch, "tokens": args.tokens,
        "threads": args.threads, "device": "cpu",
        "uncached_img_s": round(args.batch / t_ref, 2), "cached_img_s": round(args.batch / t_kv, 2),
        "ratio": round(t_ref / t_kv, 2), "identical_tokens": kv == ref,
        "caption_lengths": sorted({len(r) for r in kv}),
    }
    print(f"re-running prefix (open_clip's way): {result['uncached_img_s']:8.2f} img/s")
    print(f"key/value cache (ours):              {result['cached_img_s']:8.2f} img/s")
    print(f"ratio {result['ratio']:.2f}x  identical tokens: {result['identical_tokens']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
