"""A small dataset with stored embeddings of a chosen model and dimension (written by the real writers)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.io import Dataset
from curation.io.writer import VersionWriter
from tests.helpers import make_dataset


def fixed(vectors: list, dim: int) -> pa.Array:
    flat = np.zeros((len(vectors), dim), dtype=np.float32)
    valid = np.array([v is not None for v in vectors])
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i] = v
    arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
    return pa.array(arr.to_pylist(), type=arr.type) if valid.all() else \
        pa.array([x if ok else None for x, ok in zip(arr.to_pylist(), valid)], type=arr.type)


def dataset_with_embeddings(root: str, *, dim: int, model: str, seed: int = 0) -> Dataset:
    """Two shards of 5 images + 1 failed row each; successful rows get random embeddings."""
    ds = make_dataset(root)
    rng = np.random.default_rng(seed)
    vw = VersionWriter(ds, "score", {"model": model})
    for sid in ds.shard_ids:
        meta = ds.read_meta(sid)
        vecs = [rng.normal(size=dim).astype(np.float32) if st == "success" else None
                for st in meta.column("status").to_pylist()]
        emb = pa.table({"uid": meta.column("uid"), "image_emb": fixed(vecs, dim), "text_emb": fixed(vecs, dim)})
        vw.write_embeddings(sid, emb, model=model)
        vw.write_meta(sid, meta)
    return vw.commit(embeddings={"version": vw.version, "dim": dim, "model": model})
