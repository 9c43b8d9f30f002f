"""Evaluation-set decontamination: the SemDeDup rule against an external set.

A dataset sample is contaminated when its image embedding has cosine > 1 - eps with any
evaluation item (exact nearest-neighbour search with faiss, inner product over unit vectors).
"""
from __future__ import annotations

import os

import numpy as np

from curation.errors import ConfigError

_EMB_COLUMNS = ("image_emb", "embedding", "emb")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def load_eval_embeddings(path: str, *, model: str | None = None, pretrained: str | None = None,
                         batch: int = 64) -> np.ndarray:
    """Embeddings of an evaluation set (see ``DedupConfig.eval_set`` for accepted forms)."""
    if os.path.isdir(path):
        return _embed_folder(path, model, pretrained, batch)
    if not os.path.exists(path):
        raise ConfigError(f"eval_set: {path!r} does not exist")
    if path.endswith(".npy"):
        x = np.load(path, allow_pickle=False)
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        col = next((c for c in _EMB_COLUMNS if c in t.column_names), None)
        if col is None:
            raise ConfigError(f"eval_set: {path!r} has none of the columns {', '.join(_EMB_COLUMNS)}")
        x = np.asarray(t.column(col).to_pylist(), dtype=np.float32)
    else:
        raise ConfigError(f"eval_set: {path!r} is not a .npy, .parquet or folder of images")
    if x.ndim != 2 or not len(x):
        raise ConfigError(f"eval_set: {path!r} must hold a non-empty n x d matrix (got shape {x.shape})")
    return x.astype(np.float32)


def _embed_folder(path: str, model: str | None, pretrained: str | None, batch: int) -> np.ndarray:
    import torch

    from curation.io.images import decode_rgb
    from curation.models import load_clip

    if not model:
        raise ConfigError("eval_model: required to embed an eval_set folder of images (the dataset's model)")
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(_IMAGE_EXTS))
    if not files:
        raise ConfigError(f"eval_set: folder {path!r} holds no images ({', '.join(_IMAGE_EXTS)})")
    clip = load_clip(model, pretrained)
    out = []
    with torch.no_grad():
        for i in range(0, len(files), batch):
            ims = [clip.preprocess(decode_rgb(os.path.join(path, f))) for f in files[i:i + batch]]
            out.append(clip.model.encode_image(torch.stack(ims)).float().numpy())
    return np.concatenate(out)


def contaminated(x: np.ndarray, eval_x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask, nearest eval index) of rows of ``x`` within cosine > 1 - eps of the eval set."""
    import faiss

    from curation.dedup.semantic import l2_normalize

    if x.shape[1] != eval_x.shape[1]:
        raise ConfigError(f"eval_set: embedding dimension {eval_x.shape[1]} differs from the dataset's {x.shape[1]}")
    index = faiss.IndexFlatIP(eval_x.shape[1])
    index.add(l2_normalize(eval_x))
    if not len(x):
        return np.zeros(0, bool), np.zeros(0, np.int64)
    sim, idx = index.search(l2_normalize(x), 1)
    return sim[:, 0] > 1.0 - eps, idx[:, 0].astype(np.int64)
