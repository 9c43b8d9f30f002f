"""Score stage (Ray Data: read/decode tasks -> model actor) vs a plain one-process loop.

Both score the same shards with the same tiny model (curation-tiny, 32 px, random weights):
the baseline is what a user writes first (PIL decode + open_clip preprocess + forward, one
process, torch using every core); ours is the score stage end to end (Ray startup excluded,
model loading and shard commits included). Prints pairs/s of both and the ratio.

    python bench/bench_score.py [--samples 2048] [--shards 4] [--size 256]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def build(root: str, samples: int, shards: int, size: int):
    from tests.score.helpers import drawn_image, row, write_dataset

    per = samples // shards
    return write_dataset(root, [[(row(f"s{s}_{i}", f"a photo of shape {i}", w=size, h=size),
                                  drawn_image(s * per + i, (size, size)), "jpg") for i in range(per)]
                                for s in range(shards)])


def baseline(ds, batch: int) -> float:
    import torch
    from PIL import Image

    from curation.models import load_clip

    t0 = time.perf_counter()
    clip = load_clip("curation-tiny")
    n, imgs, caps = 0, [], []

    def flush():
        with torch.inference_mode():
            fi = torch.nn.functional.normalize(clip.model.encode_image(torch.stack(imgs)), dim=-1)
            ft = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(caps)), dim=-1)
            (fi * ft).sum(-1).tolist()

    for s in ds.iter_samples():
        imgs.append(clip.preprocess(Image.open(io.BytesIO(s["image"]))))
        caps.append(s["caption"])
        n += 1
        if len(imgs) == batch:
            flush()
            imgs, caps = [], []
    if imgs:
        flush()
    return n / (time.perf_counter() - t0)


def ours(ds, batch: int) -> float:
    from curation.runner.stage import StageContext
    from curation.score.stage import ScoreStage

    t0 = time.perf_counter()
    out = ScoreStage({"model": "curation-tiny", "batch_size": batch, "device": "cpu"})(ds, StageContext(output=ds.url))
    n = sum(v is not None for v in out.read_meta(columns=["clip_score"]).column("clip_score").to_pylist())
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    from curation.runner.ray_utils import ensure_ray

    with tempfile.TemporaryDirectory() as tmp:
        ds = build(os.path.join(tmp, "ds"), a.samples, a.shards, a.size)
        ensure_ray(num_cpus=os.cpu_count())
        base = baseline(ds, a.batch)
        mine = ours(ds, a.batch)
    print(f"samples={a.samples} image={a.size}px model=curation-tiny cpus={os.cpu_count()}")
    print(f"baseline loop (PIL + open_clip preprocess + forward): {base:8.1f} pairs/s")
    print(f"score stage (Ray Data, draft decode, actor pool):     {mine:8.1f} pairs/s")
    print(f"ratio: {mine / base:.2f}x")


if __name__ == "__main__":
    main()
