"""GPU scoring throughput: our score stage vs the webdataset + DataLoader + open_clip loop.

Prepared for one H100/H200 node (unattended, ~5 min): builds tar shards of 224 px JPEGs
with DatasetWriter, then for ViT-B-32 and ViT-L-14 (random weights, bf16) measures
end-to-end pairs/s of (a) the score stage (Ray Data read tasks -> one actor per GPU,
nvjpeg batched decode, bf16) and (b) the baseline loop of ../shared/anchors/
gpu_baseline_loop.py on the same tars. Prints JSON (also to $OUT/gpu_score.json).

    python bench/gpu_score.py [--shards 16 --per-shard 2000 --models ViT-B-32,ViT-L-14]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _shard_samples(args):
    sid, n = args
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(sid)
    out = []
    for _ in range(n):
        im = Image.new("RGB", (224, 224), tuple(int(c) for c in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(im)
        for _ in range(4):
            x, y = int(rng.integers(0, 200)), int(rng.integers(0, 200))
            d.ellipse([x, y, x + 60, y + 50], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        b = io.BytesIO()
        im.save(b, "JPEG", quality=85)
        out.append(b.getvalue())
    return sid, out


def build(root: str, shards: int, per: int):
    from curation.io import DatasetWriter
    from tests.helpers import row

    w = DatasetWriter(root, stage="bench", config={"shards": shards, "per": per})
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as ex:
        for sid, imgs in ex.map(_shard_samples, [(s, per) for s in range(shards)]):
            with w.shard(sid) as sw:
                for k, img in enumerate(imgs):
                    sw.add(row(f"{sid}_{k}", "a photo of some colored circles", w=224, h=224), img, "jpg")
    return w.commit(list(range(shards)))


def ours(ds, model: str, batch: int) -> float:
    from curation.score.stage import ScoreStage
    from curation.stage import StageContext

    t0 = time.perf_counter()
    out = ScoreStage({"model": model, "batch_size": batch, "device": "cuda", "precision": "bf16",
                      "decode": "torch"})(ds, StageContext(output=ds.url))
    n = out.manifest["history"][-1]["stats"]["samples_out"]
    return n / (time.perf_counter() - t0)


def baseline(ds, model: str, batch: int, workers: int) -> float:
    """The anchor loop (webdataset + DataLoader + open_clip, bf16), timed after 2 warm-up batches."""
    import open_clip
    import torch
    import webdataset as wds

    m, _, pre = open_clip.create_model_and_transforms(model, pretrained=None)
    # open_clip's model classes share encode_image/encode_text but declare no common base for them
    m: Any = m.cuda().eval().to(torch.bfloat16)
    tok = open_clip.get_tokenizer(model)
    urls = [os.path.join(ds.root, f"shards/{s:06d}.tar") for s in ds.shard_ids]
    pipe = (wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "txt")
            .map_tuple(pre, lambda t: tok([t])[0]).batched(batch, partial=True))
    dl = wds.WebLoader(pipe, batch_size=None, num_workers=workers, prefetch_factor=4)
    n, t0 = 0, None
    with torch.inference_mode():
        for i, (img, txt) in enumerate(dl):
            if i == 2:
                torch.cuda.synchronize()
                t0, n = time.perf_counter(), 0
            fi = m.encode_image(img.cuda(non_blocking=True).to(torch.bfloat16))
            ft = m.encode_text(txt.cuda(non_blocking=True))
            n += len(torch.nn.functional.cosine_similarity(fi, ft).float().cpu())
        torch.cuda.synchronize()
    if t0 is None:
        raise RuntimeError("baseline: fewer than 3 batches, nothing timed after the 2 warm-up batches")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--models", default="ViT-B-32,ViT-L-14")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    a = ap.parse_args()
    from curation.cluster import ensure_ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = build(os.path.join(tmp, "ds"), a.shards, a.per_shard)
        print("shards ready", ds.num_samples, flush=True)
        ensure_ray()
        for model in a.models.split(","):
            from curation.io import Dataset

            mine = ours(Dataset(ds.url), model, a.batch)
            base = baseline(ds, model, a.batch, a.workers)
            rows.append({"model": model, "ours_pairs_per_s": round(mine, 1), "baseline_pairs_per_s": round(base, 1),
                         "ratio": round(mine / base, 2), "samples": ds.num_samples})
            print(json.dumps(rows[-1]), flush=True)
    out = os.environ.get("OUT") or tempfile.gettempdir()
    with open(os.path.join(out, "gpu_score.json"), "w") as f:
        json.dump(rows, f)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
