"""Text-to-image search over a scored dataset's stored image embeddings.

The query text is embedded with the model that produced the embeddings (the manifest's
``embeddings.model``, e.g. ``ViT-B-32/laion2b_s34b_b79k``), or with ``pretrained`` when
given (a project checkpoint folder). Ranking is exact cosine similarity in numpy over the
L2-normalised vectors (a dot product), best first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError, DatasetError
from curation.io import Dataset

RESULT_COLUMNS = ["uid", "key", "shard", "caption", "url", "clip_score"]


def parse_model_label(label: str) -> tuple[str, str | None]:
    """Split a ``clip_model`` label ``<arch>/<pretrained>`` back into load_clip arguments."""
    if label.startswith("hf-hub:"):
        parts = label.split("/", 2)
        arch, rest = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else None)
    else:
        arch, _, rest = label.partition("/")
    return arch, (None if rest in (None, "", "random-init", "None") else rest)


def embed_texts(texts: list[str], model: str, pretrained: str | None) -> np.ndarray:
    """L2-normalised float32 text embeddings ``(len(texts), d)``."""
    import torch
    import torch.nn.functional as F

    from curation.models import load_clip

    clip = load_clip(model, pretrained)
    with torch.inference_mode():
        emb = clip.model.encode_text(clip.tokenizer(texts))
        return F.normalize(emb.float(), dim=-1).numpy()


def _fixed_to_numpy(col: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim) with zeros for nulls, validity mask)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vecs = np.zeros((len(arr), dim), dtype=np.float32)
    vecs[valid] = flat.reshape(-1, dim)  # flatten() drops null slots
    return vecs, valid


def search(ds: Dataset, text: str, k: int = 20, *, pretrained: str | None = None,
           model: str | None = None) -> list[dict[str, Any]]:
    """The ``k`` samples whose image embedding is most cosine-similar to ``text``.

    Returns dicts with ``rank``, ``score`` (cosine) and the sample's ``uid``, ``key``,
    ``shard``, ``caption``, ``url``, ``clip_score``, best first. Raises DatasetError when the
    dataset has no embeddings and ConfigError when its model has random weights (a
    random-init model cannot be rebuilt; pass ``pretrained``).
    """
    if k < 1:
        raise ConfigError(f"k: must be >= 1 (got {k})")
    info = ds.embeddings
    if not info:
        raise DatasetError(f"{ds.url}: has no embeddings (run `curate score` first)")
    arch, weights = parse_model_label(info["model"])
    model, weights = model or arch, pretrained or weights
    if weights is None:
        raise ConfigError(f"embeddings of {ds.url} were made by {info['model']!r} (random weights); "
                          "pass --pretrained with the checkpoint that scored it")
    query = embed_texts([text], model, weights)[0]
    if query.shape[0] != info["dim"]:
        raise ConfigError(f"model {model!r} embeds to {query.shape[0]} dims, "
                          f"the dataset's embeddings have {info['dim']}")
    best: list[tuple[float, int, int, int]] = []  # (score, order, shard, row)
    order = 0
    for sid in ds.shard_ids:
        vecs, valid = _fixed_to_numpy(ds.read_embeddings(sid, columns=["image_emb"]).column("image_emb"), info["dim"])
        sims = np.where(valid, vecs @ query, -np.inf)
        top = np.flatnonzero(valid)
        if len(top) > k:  # partial sort: only this shard's k best can make the global top k
            top = top[np.argpartition(-sims[top], k - 1)[:k]]
        best.extend((float(sims[r]), order + int(r), sid, int(r)) for r in top)
        order += len(valid)
        best = sorted(best, key=lambda t: (-t[0], t[1]))[:k]  # keep memory at k per shard
    out = []
    for rank, (score, _, sid, r) in enumerate(best):
        meta = ds.read_meta(sid)
        cols = [c for c in RESULT_COLUMNS if c in meta.column_names]
        rowd = {c: meta.column(c)[r].as_py() for c in cols}
        out.append({"rank": rank + 1, "score": score, **rowd})
    return out
