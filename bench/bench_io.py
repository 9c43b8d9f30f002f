"""Writer and reader throughput of the dataset format vs plain webdataset.TarWriter / tarfile.

Same samples (JPEG bytes + caption + JSON metadata) in the same run:
- write: ``curation.io.DatasetWriter`` (tar + Parquet metadata with offsets, atomic commit,
  manifest) vs ``webdataset.TarWriter`` (tar only);
- read: ``Dataset.iter_samples`` (sequential tar + metadata join) vs ``tarfile`` iteration,
  and random access by ``tar_offset`` vs seeking with ``tarfile`` member lookup.

    python bench/bench_io.py [--samples 20000 --shards 8 --image-kb 12]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image


def make_samples(n: int, kb: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    side = int((kb * 1024 / 0.6) ** 0.5 / 1.7)  # noisy JPEGs of roughly kb KiB
    base = []
    for _ in range(16):
        arr = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        base.append(buf.getvalue())
    return [{"uid": f"u{i:08d}", "url": f"http://example.invalid/{i}.jpg", "caption": f"caption number {i}",
             "status": "success", "image": base[i % 16]} for i in range(n)]


def write_ours(root: str, samples: list[dict], shards: int) -> float:
    from curation.io import DatasetWriter

    t = time.perf_counter()
    w = DatasetWriter(root, stage="bench")
    per = -(-len(samples) // shards)
    for s in range(shards):
        with w.shard(s) as sw:
            for x in samples[s * per:(s + 1) * per]:
                sw.add({k: v for k, v in x.items() if k != "image"}, image=x["image"])
    w.commit(list(range(shards)))
    return time.perf_counter() - t


def write_wds(root: str, samples: list[dict], shards: int) -> float:
    import webdataset as wds

    os.makedirs(root, exist_ok=True)
    t = time.perf_counter()
    per = -(-len(samples) // shards)
    for s in range(shards):
        with wds.TarWriter(f"{root}/{s:06d}.tar") as tw:
            for i, x in enumerate(samples[s * per:(s + 1) * per]):
                meta = {k: v for k, v in x.items() if k != "image"}
                tw.write({"__key__": f"{s:06d}{i:06d}", "jpg": x["image"], "txt": x["caption"],
                          "json": json.dumps(meta).encode()})
    return time.perf_counter() - t


def read_ours(root: str) -> tuple[float, int]:
    from curation.io import Dataset

    t = time.perf_counter()
    n = sum(len(s["image"]) > 0 for s in Dataset(root).iter_samples())
    return time.perf_counter() - t, n


def read_tarfile(root: str) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for name in sorted(os.listdir(root)):
        with tarfile.open(os.path.join(root, name), "r|") as tf:
            for m in tf:
                f = tf.extractfile(m)
                assert f is not None  # the bench's tars hold regular files only
                data = f.read()
                n += m.name.endswith(".jpg") and len(data) > 0
    return time.perf_counter() - t, n


def random_ours(root: str, k: int) -> float:
    from curation.io import Dataset

    ds = Dataset(root)
    rows = random.Random(0).sample(ds.read_meta().to_pylist(), k)
    t = time.perf_counter()
    for r in rows:
        ds.read_image(r)
    return time.perf_counter() - t


def random_tarfile(root: str, k: int, total: int, shards: int) -> float:
    per = -(-total // shards)
    picks = random.Random(0).sample(range(total), k)
    t = time.perf_counter()
    for i in picks:  # what users do without an offset index: open, scan to the member
        s, j = divmod(i, per)
        with tarfile.open(f"{root}/{s:06d}.tar") as tf:
            f = tf.extractfile(f"{s:06d}{j:06d}.jpg")
            assert f is not None  # a regular member
            f.read()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--image-kb", type=int, default=12)
    ap.add_argument("--random", type=int, default=500)
    a = ap.parse_args()
    samples = make_samples(a.samples, a.image_kb)
    mb = sum(len(s["image"]) for s in samples) / 1e6
    tmp = tempfile.mkdtemp(prefix="bench-io-")
    try:
        tw_ours = write_ours(f"{tmp}/ours", samples, a.shards)
        tw_wds = write_wds(f"{tmp}/wds", samples, a.shards)
        tr_ours, n1 = read_ours(f"{tmp}/ours")
        tr_tar, n2 = read_tarfile(f"{tmp}/wds")
        assert n1 == n2 == a.samples, (n1, n2)
        rr_ours = random_ours(f"{tmp}/ours", a.random)
        rr_tar = random_tarfile(f"{tmp}/wds", a.random, a.samples, a.shards)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "samples": a.samples, "image_mb": round(mb, 1),
        "write_samples_per_s": {"curation": round(a.samples / tw_ours),
                                "webdataset.TarWriter": round(a.samples / tw_wds)},
        "write_mb_per_s": {"curation": round(mb / tw_ours, 1), "webdataset.TarWriter": round(mb / tw_wds, 1)},
        "write_ratio": round(tw_wds / tw_ours, 2),
        "read_samples_per_s": {"curation": round(a.samples / tr_ours), "tarfile": round(a.samples / tr_tar)},
        "read_mb_per_s": {"curation": round(mb / tr_ours, 1), "tarfile": round(mb / tr_tar, 1)},
        "read_ratio": round(tr_tar / tr_ours, 2),
        "random_access_per_s": {"curation (tar_offset)": round(a.random / rr_ours),
                                "tarfile (open+scan)": round(a.random / rr_tar)},
        "random_ratio": round(rr_tar / rr_ours, 1),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
