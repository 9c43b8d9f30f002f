"""Tiny hand-made datasets for dedup tests (written with the real DatasetWriter)."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from curation.io import Dataset
from curation.io.writer import DatasetWriter

SHAPES = ["circle", "square", "triangle"]
COLOURS = [(230, 40, 40), (40, 200, 60), (40, 60, 230), (240, 220, 30), (200, 40, 200)]


def draw(i: int, size: int = 96) -> Image.Image:
    """A distinct scene per i: shape, colour, position and a stripe pattern all vary."""
    rng = np.random.default_rng(i)
    bg = tuple(int(v) for v in rng.integers(0, 255, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    for k in range(int(rng.integers(2, 5))):
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
    vw = ds.new_version("score", {"test": True})
    d = len(next(iter(emb_by_uid.values())))
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        uids = t.column("uid").to_pylist()
        flat = np.concatenate([emb_by_uid[u] for u in uids]).astype(np.float32)
        arr = pa.FixedSizeListArray.from_arrays(pa.array(flat), d)
        vw.write_meta(sid, t)
        vw.write_embeddings(sid, pa.table({"uid": uids, "image_emb": arr, "text_emb": arr}), model=model)
    return vw.commit()
