"""DataComp's global top-fraction threshold, computed exactly from the distributed column.

The rule (see :mod:`curation.filters.rules`): sort the N scored samples' float32 scores
descending; the threshold is the score at 0-based rank ``k = min(floor(N*f), N-1)``. No
process holds the N scores: a two-pass radix select over shards finds that exact value.

* Every float32 maps to a ``uint32`` key whose unsigned order is the float order
  (:func:`score_keys`); ``-0.0`` counts as ``0.0`` and every NaN as one value above ``+inf``,
  which is where ``np.sort`` puts them, so ranks agree with the reference implementation.
* Pass 1: each task histograms the high 16 bits of its shards' keys (sparse: only bins
  that occur). The driver sums them in one dense 65,536-bin array (512 KB) and finds the
  bin holding rank ``k`` and the rank ``r`` inside it.
* Pass 2: each task histograms the low 16 bits of the keys in that bin; the driver finds
  rank ``r`` there. High and low bits give the exact key, hence the exact float32 value,
  ties included (the value at rank ``k`` is the same however ties are ordered).

Each pass reads only the score columns of each shard once. The driver's memory is two
dense histograms plus one sparse one per task in flight, independent of N.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as _pc

from curation.io import Dataset

pc: Any = _pc  # pyarrow.compute's functions are generated at import: no static attributes
BINS = 1 << 16
MAX_TASKS = 256  # shards are grouped so one pass is at most this many tasks
_SIGN = np.uint32(0x80000000)
_NAN = np.uint32(0x7FC00000)

MapFn = Callable[..., list]  # map(fn, items, **kwargs) -> results in item order


def score_keys(scores: np.ndarray) -> np.ndarray:
    """Order-preserving ``float32 -> uint32``: ``a < b`` iff ``key(a) < key(b)``."""
    s = np.asarray(scores, dtype=np.float32).copy()
    s[s == 0] = 0.0                          # -0.0 == 0.0 for the rule's >= comparison
    bits = s.view(np.uint32)
    bits[np.isnan(s)] = _NAN                 # one NaN, sorted last (np.sort's order)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN).astype(np.uint32)


def key_to_score(key: int) -> float:
    """Inverse of :func:`score_keys` for one key."""
    k = np.uint32(key)
    bits = k & ~_SIGN if k & _SIGN else ~k
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def shard_scores(meta: pa.Table, synthetic: bool) -> np.ndarray:
    """float32 scores of one shard's scored rows: ``status = 'success'`` and a non-null
    effective score (the synthetic caption's where ``caption_source`` is ``synthetic`` and
    ``synthetic`` is set, as :func:`curation.filters.stage.effective_score_sql` defines it)."""
    n = meta.num_rows

    def col(name: str) -> pa.Array:
        if name in meta.column_names:
            return meta.column(name).combine_chunks()
        return pa.nulls(n, pa.float32() if name.endswith("score") else pa.string())

    score = col("clip_score")
    if synthetic:
        use = pc.fill_null(pc.equal(col("caption_source"), "synthetic"), False)
        score = pc.if_else(use, pc.cast(col("synthetic_clip_score"), score.type), score)
    ok = pc.and_(pc.fill_null(pc.equal(col("status"), "success"), False), pc.is_valid(score))
    kept = pc.filter(score, ok)
    return kept.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def read_columns(ds: Dataset, sid: int, columns: Sequence[str]) -> pa.Table:
    """The columns of shard ``sid``'s metadata that exist (a missing one reads as nulls
    downstream, as DuckDB's ``union_by_name`` view shows it)."""
    import pyarrow.parquet as pq

    from curation.io import format as fmt
    from curation.io.fs import join

    with ds.fs.open(join(ds.root, fmt.meta_file(ds.version, sid)), "rb") as f:
        pf = pq.ParquetFile(f)
        present = [c for c in columns if c in pf.schema_arrow.names]
        return pf.read(columns=present)


def histogram_task(shard_ids: Sequence[int], *, url: str, storage_options: dict, version: int,
                   synthetic: bool, high: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse histogram over some shards: ``(bins, counts)``.

    ``high=None``: bins are the keys' high 16 bits (pass 1); otherwise the low 16 bits of
    the keys whose high bits equal ``high`` (pass 2).
    """
    ds = Dataset(url, storage_options, version=version)
    cols = ["status", "clip_score"] + (["caption_source", "synthetic_clip_score"] if synthetic else [])
    parts = []
    for sid in shard_ids:
        keys = score_keys(shard_scores(read_columns(ds, sid, cols), synthetic))
        if high is None:
            parts.append(keys >> 16)
        else:
            parts.append(keys[(keys >> 16) == high] & 0xFFFF)
    allk = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
    bins, counts = np.unique(allk, return_counts=True)
    return bins.astype(np.uint32), counts.astype(np.int64)


def _dense(results: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    hist = np.zeros(BINS, dtype=np.int64)
    for bins, counts in results:
        np.add.at(hist, bins.astype(np.int64), counts)
    return hist


def _rank_bin(hist: np.ndarray, rank: int) -> tuple[int, int]:
    """The bin holding 0-based descending ``rank``, and the descending rank inside it."""
    desc = hist[::-1]
    cum = np.cumsum(desc)
    i = int(np.searchsorted(cum, rank, side="right"))  # first i with cum[i] > rank
    before = int(cum[i - 1]) if i else 0
    return BINS - 1 - i, rank - before


def groups(shard_ids: Sequence[int], max_tasks: int = MAX_TASKS) -> list[list[int]]:
    """Shards cut into at most ``max_tasks`` contiguous groups (one task each)."""
    ids = list(shard_ids)
    per = max(1, math.ceil(len(ids) / max_tasks))
    return [ids[i:i + per] for i in range(0, len(ids), per)]


def top_fraction_threshold(ds: Dataset, fraction: float, *, synthetic: bool, map_fn: MapFn,
                           max_tasks: int = MAX_TASKS) -> tuple[float | None, int]:
    """``(threshold, n_scored)`` of DataComp's top-fraction rule over all of ``ds``.

    Equals :func:`curation.filters.rules.top_fraction_threshold` over the scored rows'
    effective scores (same float32 value, ties included); ``None`` when nothing is scored.
    ``map_fn(fn, items, **kwargs)`` runs the per-group tasks (the stage's ``map``).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    items = groups(ds.shard_ids, max_tasks)
    kw: dict[str, Any] = {"url": ds.url, "storage_options": ds.storage_options, "version": ds.version,
                          "synthetic": synthetic}
    hist = _dense(map_fn(histogram_task, items, high=None, **kw))
    n = int(hist.sum())
    if n == 0:
        return None, 0
    rank = min(math.floor(n * fraction), n - 1)
    high, inner = _rank_bin(hist, rank)
    low, _ = _rank_bin(_dense(map_fn(histogram_task, items, high=high, **kw)), inner)
    return key_to_score((high << 16) | low), n
