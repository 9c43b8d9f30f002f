"""Streaming loader benchmark: samples/s delivered vs raw tar reading and vs webdataset.

    python bench/bench_stream.py [--samples 4000] [--shard-size 500] [--image-size 64] [--workers 2]

All three read the same shards of one curated dataset through a DataLoader with the same
number of workers, decode each image with Pillow to RGB, apply a no-op transform and
return lists (no collation), measured in the same run (best of ``--repeats``):

* raw: each worker reads its shards sequentially with ``tarfile`` (no shuffle at all);
* webdataset: ``wds.WebDataset(shardshuffle=...).shuffle(1000).decode("pil")``;
* curation: ``StreamingDataLoader(StreamingDataset(...))`` with the shard-aware shuffle.

Targets (issue 9): curation >= 0.9x raw and >= 1.0x webdataset.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset, get_worker_info  # noqa: E402

from curation.io import Dataset, DatasetWriter  # noqa: E402
from curation.stream import StreamingDataLoader, StreamingDataset, identity  # noqa: E402


def as_list(batch):
    return batch


def build(root: str, n: int, shard_size: int, size: int) -> Dataset:
    rng = np.random.default_rng(0)
    w = DatasetWriter(root, stage="bench", config={"n": n})
    ids = []
    for sid in range(0, (n + shard_size - 1) // shard_size):
        with w.shard(sid) as sw:
            for i in range(sid * shard_size, min(n, (sid + 1) * shard_size)):
                arr = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
                img = Image.fromarray(arr).resize((size, size))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                sw.add({"uid": f"b{i:07d}", "caption": f"a picture {i}", "url": "", "status": "success"},
                       buf.getvalue(), "jpg")
        ids.append(sid)
    return w.commit(ids)


class RawTar(IterableDataset):
    """Baseline: sequential tarfile reads, shards split across workers, Pillow decode."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for p in self.paths[wid::nw]:
            with tarfile.open(p, "r|") as tf:
                for m in tf:
                    if m.name.endswith(".jpg"):
                        f = tf.extractfile(m)
                        assert f is not None  # the bench's tars hold regular files only
                        img = Image.open(io.BytesIO(f.read()))
                        yield {"image": identity(img.convert("RGB")), "uid": m.name[:-4]}


def timed(loader) -> tuple[float, int]:
    t = time.perf_counter()
    n = sum(len(b) if isinstance(b, list) else len(b["uid"]) for b in loader)
    return time.perf_counter() - t, n


def run(args) -> None:
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="bench-stream-")
    ds = build(os.path.join(tmp, "ds"), args.samples, args.shard_size, args.image_size)
    paths = [ds.tar_path(s) for s in ds.shard_ids]
    bs, nw = args.batch_size, args.workers

    def raw():
        return DataLoader(RawTar(paths), batch_size=bs, num_workers=nw, collate_fn=as_list)

    def wds_loader():
        import webdataset as wds

        pipe = (wds.WebDataset(paths, shardshuffle=len(paths), empty_check=False, seed=0)
                .shuffle(1000).decode("pil").map(lambda s: {"image": identity(s["jpg"]), "uid": s["__key__"]}))
        return DataLoader(pipe, batch_size=bs, num_workers=nw, collate_fn=as_list)

    def ours():
        sd = StreamingDataset(ds, batch_size=bs, transform=identity, seed=0)
        return StreamingDataLoader(sd, num_workers=nw, collate_fn=as_list)

    results: dict[str, tuple[float, int]] = {}
    for name, make in (("raw tarfile", raw), ("webdataset", wds_loader), ("curation", ours)):
        timed(make())  # warm the page cache and imports
        best = min((timed(make()) for _ in range(args.repeats)), key=lambda r: r[0])
        results[name] = best
        print(f"{name:12s} {best[1]:6d} samples in {best[0]:6.2f} s = {best[1] / best[0]:8.0f} samples/s")
    rate = {k: n / t for k, (t, n) in results.items()}
    print(f"curation / raw tarfile  = {rate['curation'] / rate['raw tarfile']:.2f}x (target >= 0.9)")
    print(f"curation / webdataset   = {rate['curation'] / rate['webdataset']:.2f}x (target >= 1.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
