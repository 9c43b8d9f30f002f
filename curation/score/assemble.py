"""One shard's scoring results -> its new metadata columns and its embeddings table.

Pure functions (no I/O): every score path (in-process, CPU actors, GPU split) ends here, so
every path writes the same columns with the same reasons:

* ``clip_score`` (float32) where the sample was attempted (``status = 'success'`` with a tar
  member) and scored; ``clip_model`` on every attempted row; ``score_error`` the reason an
  attempted row was not scored (``decode_error: ...``, or ``missing_image: ...`` when the tar
  lacked the member); failed downloads keep nulls in all three.
* embeddings ``uid``, ``image_emb``, ``text_emb`` (``fixed_size_list<float32>[d]``),
  **row-aligned** with the shard's metadata, null vectors where nothing was scored.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as _pc

pc: Any = _pc  # pyarrow.compute's functions are generated at import: no static attributes
NEW_COLUMNS = ("clip_score", "clip_model", "score_error")
MISSING_IMAGE = "missing_image: no tar member for this row"

# uid -> (score, error or "", image vector, text vector), as the embedder returns them
Results = dict[str, tuple[Any, Any, Any, Any]]


def fixed_list(vectors: list[np.ndarray | None], dim: int) -> pa.Array:
    """``fixed_size_list<float32>[dim]`` with nulls where a vector is None."""
    flat = np.zeros((len(vectors), dim), dtype=np.float32)
    valid = np.zeros(len(vectors), dtype=bool)
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i], valid[i] = v, True
    arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
    if valid.all():
        return arr
    return pc.if_else(pa.array(valid), arr, pa.nulls(len(vectors), arr.type))


def attempted_mask(meta: pa.Table) -> np.ndarray:
    """Rows the scorer reads from the tar: ``status = 'success'`` with a ``tar_offset``."""
    ok = pc.and_(pc.fill_null(pc.equal(meta.column("status"), "success"), False),
                 pc.is_valid(meta.column("tar_offset")))
    return np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)


def assemble_shard(meta: pa.Table, results: Results, label: str,
                   dim: int) -> tuple[dict[str, pa.Array], pa.Table, dict[str, Any]]:
    """Join one shard's results onto its metadata rows (same rows, same order).

    Returns ``(new_columns, embeddings_table, stats)``: ``stats`` has ``samples_out`` (rows
    scored) and ``dropped`` (``{"score_error": n}`` when some attempted rows were not).
    """
    uids = meta.column("uid").to_pylist()
    attempted = attempted_mask(meta)
    scores, models, errors, iembs, tembs = [], [], [], [], []
    for uid, att in zip(uids, attempted):
        r = results.get(uid)
        err = None
        if att and r is None:
            err = MISSING_IMAGE
        elif r is not None and r[1]:
            err = str(r[1])
        models.append(label if att else None)
        errors.append(err)
        if att and err is None and r is not None:
            scores.append(float(r[0]))
            iembs.append(np.asarray(r[2], dtype=np.float32))
            tembs.append(np.asarray(r[3], dtype=np.float32))
        else:
            scores.append(None)
            iembs.append(None)
            tembs.append(None)
    columns = {"clip_score": pa.array(scores, type=pa.float32()), "clip_model": pa.array(models, type=pa.string()),
               "score_error": pa.array(errors, type=pa.string())}
    emb = pa.table({"uid": meta.column("uid"), "image_emb": fixed_list(iembs, dim),
                    "text_emb": fixed_list(tembs, dim)}).replace_schema_metadata({"model": label})
    n_err = sum(e is not None for e in errors)
    stats: dict[str, Any] = {"samples_out": sum(s is not None for s in scores)}
    if n_err:
        stats["dropped"] = {"score_error": n_err}
    return columns, emb, stats


def batch_results(batch: dict[str, Any]) -> Results:
    """An embedder output batch as :data:`Results` (one shard's rows or several shards')."""
    return {uid: (s, err, ie, te) for uid, s, err, ie, te in zip(batch["uid"], batch["clip_score"],
                                                                 batch["score_error"], batch["image_emb"],
                                                                 batch["text_emb"])}
