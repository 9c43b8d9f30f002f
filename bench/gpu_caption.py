"""GPU benchmark: coca_ViT-L-14 greedy 30-token captions, bf16 autocast, random weights.

Our key/value-cached decoder vs the re-running loop measured by ../shared/anchors/gpu_anchor.py
(256 img/s on one H200), both in this run on the same GPU, plus token identity on a
sub-batch. Prints one JSON object (also written to $OUT/gpu_caption.json). ~2-3 minutes.

    python bench/gpu_caption.py [--batch 256] [--tokens 30]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

ANCHOR_IMG_S = 256.0  # CoCa-L-14 greedy len30 bf16 bs256, re-running the prefix (H200)
SOT, EOT = 49406, 49407


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, iters: int) -> float:
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t) / iters


def main() -> None:
    import open_clip
    from open_clip.coca_model import CoCa

    from curation.caption.coca import CachedCoca, randomize_
    from curation.caption.search import DecodeOptions, generate
    from curation.models import register_tiny_configs

    register_tiny_configs()  # --model curation-tiny-coca for a CPU smoke test

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--model", default="coca_ViT-L-14")
    ap.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    args = ap.parse_args()
    dev = args.device
    model = open_clip.create_model(args.model, pretrained=None)
    if not isinstance(model, CoCa):
        raise SystemExit(f"{args.model} is not a CoCa model")
    randomize_(model, seed=0, std=0.02)
    with torch.no_grad():  # no end-of-text: all captions run the full length, as in the anchor
        model.text_decoder.text_projection[:, EOT] = -1.0
    model = model.to(dev).eval()
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    x = torch.randn(args.batch, 3, size, size, device=dev)
    steps = args.tokens - 1  # the anchor's captions are 30 tokens including the start token

    def rerun():  # exactly the anchor's loop
        lat, embs = model._encode_image(x)
        out = torch.full((args.batch, 1), SOT, device=dev, dtype=torch.long)
        for _ in range(steps):
            logits = model(x, out, image_latent=lat, image_embs=embs, output_labels=False)["logits"][:, -1]
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        return out

    coca = CachedCoca(model)
    opts = DecodeOptions(max_new_tokens=steps)
    res = {"model": args.model, "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
           "torch": torch.__version__, "batch": args.batch, "tokens": args.tokens, "anchor_img_s": ANCHOR_IMG_S}
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        t_ref = timed(rerun, args.iters)
        t_kv = timed(lambda: generate(coca, x, sot=SOT, eot=EOT, opts=opts), args.iters)
        sub = x[:32]
        n_sub = sub.shape[0]
        ours = generate(coca, sub, sot=SOT, eot=EOT, opts=opts)
        lat, embs = model._encode_image(sub)
        out = torch.full((n_sub, 1), SOT, device=dev, dtype=torch.long)
        for _ in range(steps):
            logits = model(sub, out, image_latent=lat, image_embs=embs, output_labels=False)["logits"][:, -1]
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        ref = out[:, 1:].tolist()
    same = sum(a == b for a, b in zip(ours, ref))
    res.update({"rerun_img_s": round(args.batch / t_ref, 1), "cached_img_s": round(args.batch / t_kv, 1),
                "ratio_same_run": round(t_ref / t_kv, 2), "ratio_vs_anchor": round(args.batch / t_kv / ANCHOR_IMG_S, 2),
                "identical_rows_bf16": f"{same}/{len(ref)}",
                "note": "bf16 near-ties can flip a token; fp32 identity is checked by tests/caption"})
    print(json.dumps(res))
    out_dir = os.environ.get("OUT")
    if out_dir:
        with open(os.path.join(out_dir, "gpu_caption.json"), "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
