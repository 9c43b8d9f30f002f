"""Tiny hand-made datasets for dedup tests (written with the real DatasetWriter)."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from curation.io import Dataset
from curation.io.writer import DatasetWriter, VersionWriter

SHAPES = ["circle", "square", "triangle"]
COLOURS = [(230, 40, 40), (40, 200, 60), (40, 60, 230), (240, 220, 30), (200, 40, 200)]


def draw(i: int, size: int = 96) -> Image.Image:
    """A distinct scene per i: shape, colour, position and a stripe pattern all vary."""
    rng = np.random.default_rng(i)
    bg = tuple(int(v) for v in rng.integers(0, 255, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 5))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 30, 2))
        w = int(rng.integers(15, 30))
        col = COLOURS[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(3))]
        box = [x0, y0, x0 + w, y0 + w]
        if shape == "circle":
            d.ellipse(box, fill=col)
        elif shape == "square":
            d.rectangle(box, fill=col)
        else:
            d.polygon([(x0, y0 + w), (x0 + w, y0 + w), (x0 + w // 2, y0)], fill=col)
    return im


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def build(root: str, samples: list[dict], per_shard: int = 5) -> Dataset:
    """samples: dicts with uid, image (bytes or None), optional clip_score."""
    w = DatasetWriter(root, stage="test", config={"n": len(samples)})
    ids = []
    for sid, start in enumerate(range(0, len(samples), per_shard)):
        with w.shard(sid) as sw:
            for s in samples[start:start + per_shard]:
                img = s.get("image")
                row = {"uid": s["uid"], "url": f"http://127.0.0.1/{s['uid']}", "caption": "a scene",
                       "status": "success" if img is not None else "failed_download",
                       "error": None if img is not None else "404",
                       "sha256": hashlib.sha256(img).hexdigest() if img is not None else None}
                if "clip_score" in s:
                    row["clip_score"] = s["clip_score"]
                sw.add(row, img, "png" if img and img[:4] == b"\x89PNG" else "jpg")
        ids.append(sid)
    return w.commit(ids)


def add_embeddings(ds: Dataset, emb_by_uid: dict[str, np.ndarray], model: str = "test-model") -> Dataset:
    """Write a new version with embeddings (as the score stage does)."""
    vw = VersionWriter(ds, "score", {"test": True})
    d = len(next(iter(emb_by_uid.values())))
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        uids = t.column("uid").to_pylist()
        flat = np.concatenate([emb_by_uid[u] for u in uids]).astype(np.float32)
        arr = pa.FixedSizeListArray.from_arrays(pa.array(flat), d)
        vw.write_meta(sid, t)
        vw.write_embeddings(sid, pa.table({"uid": uids, "image_emb": arr, "text_emb": arr}), model=model)
    return vw.commit()


# -- metadata-only datasets (dedup reads no tar when hashes are stored) ------------------------
def meta_only(root: str, *, uids: list[str], sha256: list, phash: list, clip_score=None,
              has_image=None, emb: np.ndarray | None = None, per_shard: int = 100) -> Dataset:
    """A committed dataset whose metadata (and embeddings) are written directly, without tars
    or images: for dedup at scale and for hand-built chains. ``phash`` are hex strings."""
    import json
    import os

    import pyarrow.parquet as pq

    n = len(uids)
    has_image = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
    os.makedirs(os.path.join(root, "meta", "v1"), exist_ok=True)
    os.makedirs(os.path.join(root, "shards"), exist_ok=True)
    if emb is not None:
        os.makedirs(os.path.join(root, "emb", "v1"), exist_ok=True)
    shards = []
    for sid, a in enumerate(range(0, n, per_shard)):
        b = min(n, a + per_shard)
        img = has_image[a:b]
        rows = b - a
        t = pa.table({
            "uid": pa.array(uids[a:b], pa.string()),
            "url": pa.array([f"http://127.0.0.1/{u}" for u in uids[a:b]], pa.string()),
            "caption": pa.array(["a scene"] * rows, pa.string()),
            "status": pa.array(["success" if i else "failed_download" for i in img], pa.string()),
            "error": pa.nulls(rows, pa.string()),
            "sha256": pa.array([s if i else None for s, i in zip(sha256[a:b], img)], pa.string()),
            "clip_score": pa.array(None if clip_score is None else clip_score[a:b], pa.float32())
            if clip_score is not None else pa.nulls(rows, pa.float32()),
            "key": pa.array([f"{sid:06d}{r:06d}" for r in range(rows)], pa.string()),
            "shard": pa.array([sid] * rows, pa.int32()),
            "tar_offset": pa.array([512 * (3 * r + 1) if i else None for r, i in enumerate(img)], pa.int64()),
            "tar_size": pa.array([100 if i else None for i in img], pa.int64()),
            "image_ext": pa.array(["jpg" if i else None for i in img], pa.string()),
            "width": pa.array([32] * rows, pa.int32()), "height": pa.array([32] * rows, pa.int32()),
            "original_width": pa.array([32] * rows, pa.int32()), "original_height": pa.array([32] * rows, pa.int32()),
            "phash": pa.array([h if i else None for h, i in zip(phash[a:b], img)], pa.string()),
        })
        pq.write_table(t, os.path.join(root, "meta", "v1", f"{sid:06d}.parquet"))
        if emb is not None:
            d = emb.shape[1]
            arr = pa.FixedSizeListArray.from_arrays(pa.array(emb[a:b].astype(np.float32).ravel()), d)
            pq.write_table(pa.table({"uid": uids[a:b], "image_emb": arr, "text_emb": arr}),
                           os.path.join(root, "emb", "v1", f"{sid:06d}.parquet"))
        open(os.path.join(root, "shards", f"{sid:06d}.tar"), "wb").write(b"\0" * 1024)
        shards.append({"id": sid, "num_images": int(img.sum()), "num_samples": rows,
                       "tar": f"shards/{sid:06d}.tar", "tar_bytes": 1024})
    emb_info = {"version": 1, "dim": int(emb.shape[1]), "model": "test-model"} if emb is not None else None
    manifest = {"columns": t.column_names, "created_at": "2026-01-01T00:00:00+00:00", "embeddings": emb_info,
                "format": "curation-dataset", "format_version": 1,
                "history": [{"config": {"n": n}, "config_hash": "0" * 16, "created_at": "2026-01-01T00:00:00+00:00",
                             "parent": None, "stage": "test", "stats": {}, "version": 1}],
                "num_samples": n, "shards": shards, "version": 1}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return Dataset(root)


def chained(n_base: int, seed: int, *, d: int = 32, radius: int = 4, step: float = 0.12) -> dict:
    """Columns for :func:`meta_only` where duplicate groups chain.

    * pHash: random walks of ``radius``-bit flips (neighbours within the radius, two steps
      apart not), some walks long enough to cross partitions;
    * exact: copies (same sha256 and pHash) with varied scores (ties, nulls), some of a walk
      member that pHash then removes;
    * embeddings: random walks on the sphere (step ``step``: neighbours within
      ``eps = 0.75 * step**2``, two steps apart not), some crossing pHash groups.
    """
    rng = np.random.default_rng(seed)
    codes, embs, shas = [], [], []
    for w in range(n_base):
        length = int(rng.integers(1, 7))
        c = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        centre = rng.normal(size=d)
        e = centre / np.linalg.norm(centre)
        for j in range(length):
            codes.append(c)
            embs.append(e.copy())
            shas.append(hashlib.sha256(f"{seed}-{w}-{j}".encode()).hexdigest())
            flips = rng.choice(64, radius, replace=False)
            for bit in flips:
                c ^= 1 << int(bit)
            e = e + step * rng.normal(size=d) / np.sqrt(d)
            e /= np.linalg.norm(e)
    n0 = len(codes)
    for i in rng.choice(n0, n0 // 4, replace=False):  # exact copies
        codes.append(codes[i])
        embs.append(embs[i] + 1e-4 * rng.normal(size=d))
        shas.append(shas[i])
    order = rng.permutation(len(codes))
    n = len(codes)
    scores = np.round(rng.choice([0.1, 0.2, 0.3, np.nan], n), 2)
    return {"uids": [f"x{rng.integers(10**9):09d}{k:05d}" for k in range(n)],
            "sha256": [shas[i] for i in order], "phash": [f"{codes[i]:016x}" for i in order],
            "clip_score": scores, "emb": np.array([embs[i] for i in order], dtype=np.float32),
            "eps": 0.75 * step**2}
