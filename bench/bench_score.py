"""Score stage vs a plain one-process loop, on the same shards in the same run.

Both score the same shards with the same tiny model (curation-tiny, 32 px, random weights):
the baseline is what a user writes first (PIL decode + open_clip preprocess + forward, one
process, batched, torch using every core); ours is the score stage end to end (model loading
and shard commits included; Ray startup excluded for both: Ray is started before either is
timed). ``--executor`` picks the stage's path: ``auto`` (in-process below
``local_max_samples``, Ray Data above), ``ray`` or ``local``; ``--repeat`` alternates the two
measurements and reports the median. Prints pairs/s of both, the ratio and the load average.

    python bench/bench_score.py [--samples 2048] [--shards 4] [--size 256] [--executor auto]
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
    from tests.helpers import drawn_image, row, write_dataset

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


def ours(ds, batch: int, executor: str) -> tuple[float, str]:
    from curation.score.stage import ScoreStage
    from curation.stage import StageContext

    t0 = time.perf_counter()
    ctx = StageContext(output=ds.url)
    out = ScoreStage({"model": "curation-tiny", "batch_size": batch, "device": "cpu",
                      "executor": executor})(ds, ctx)
    n = sum(v is not None for v in out.read_meta(columns=["clip_score"]).column("clip_score").to_pylist())
    dt = time.perf_counter() - t0
    assert ctx.stats is not None  # the stage call fills it
    ex = ctx.stats.extra
    return n / dt, f"{ex.get('executor')}" + (f", {ex['layout']} x{ex['actors']} actors" if "layout" in ex else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--executor", choices=["auto", "ray", "local"], default="auto")
    ap.add_argument("--repeat", type=int, default=1, help="alternate both this many times; report medians")
    a = ap.parse_args()
    import shutil
    import statistics

    from curation.cluster import ensure_ray
    from curation.io import Dataset

    bases, mines, how = [], [], ""
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ds = build(os.path.join(tmp, "ds"), a.samples, a.shards, a.size)
        ensure_ray(num_cpus=os.cpu_count())
        for r in range(a.repeat):
            # each run of ours scores its own copy (same shards): a rerun on the same
            # dataset would resume the committed version and do nothing
            copy = os.path.join(tmp, f"run{r}")
            shutil.copytree(ds.root, copy)
            bases.append(baseline(ds, a.batch))
            m, how = ours(Dataset(copy), a.batch, a.executor)
            mines.append(m)
    base, mine = statistics.median(bases), statistics.median(mines)
    load1 = os.getloadavg()
    print(f"samples={a.samples} shards={a.shards} image={a.size}px model=curation-tiny cpus={os.cpu_count()} "
          f"load avg (1 min) before/after: {load0[0]:.2f}/{load1[0]:.2f}")
    print(f"baseline loop (PIL + open_clip preprocess + forward): {base:8.1f} pairs/s  {[round(x) for x in bases]}")
    print(f"score stage ({how}):{' ' * max(1, 38 - len(how))}{mine:8.1f} pairs/s  {[round(x) for x in mines]}")
    print(f"ratio: {mine / base:.2f}x")


if __name__ == "__main__":
    main()
