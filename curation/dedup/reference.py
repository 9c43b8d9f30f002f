"""The single-process dedup decision: the reference the distributed one is tested against.

It holds every uid, sha256, pHash and the candidates' n x d embedding matrix in one
process, so it is for tests and benchmarks only; the stage runs
:func:`curation.dedup.core.find_duplicates`, which gives the same ``dup_of`` and
``dedup_reason`` for every row without any process holding per-row data of the dataset.

Order and policy: exactly those stated in :mod:`curation.dedup.core`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup import mih
from curation.dedup.config import DedupConfig
from curation.dedup.core import resolve_methods
from curation.dedup.groups import UnionFind, keep_rank, keepers
from curation.errors import DatasetError
from curation.io import Dataset


@dataclass
class DedupResult:
    """Per-row outputs aligned with ``ds.read_meta()`` (all shards in order)."""

    uid: list[str]
    dup_of: list[str | None]
    dedup_reason: list[str | None]
    phash: list[str | None] | None
    stats: dict[str, Any] = field(default_factory=dict)


def read_embeddings_aligned(ds: Dataset, uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(matrix n x d, has-embedding mask) aligned with ``uids`` (joined on uid)."""
    from curation.dedup.exact import align_embeddings

    return align_embeddings(ds.read_embeddings(columns=["uid", "image_emb"]), uids)


def compute_phashes(ds: Dataset, existing: list[str | None] | None, uids: list[str],
                    has_img: np.ndarray, map=None) -> list[str | None]:
    """pHash hex per row: reuse a stored ``phash`` column, else compute per shard (as ``map`` tasks if given)."""
    if existing is not None and all(h is not None for h, ok in zip(existing, has_img) if ok):
        return list(existing)
    from curation.dedup.phash import phash_shard

    kw = {"url": ds.url, "storage_options": ds.storage_options, "version": ds.version}
    outs = map(phash_shard, ds.shard_ids, **kw) if map else [phash_shard(s, **kw) for s in ds.shard_ids]
    by_uid = {u: h for o in outs for u, h in zip(o["uid"], o["phash"])}
    return [by_uid.get(u) for u in uids]


def _exact(alive: np.ndarray, sha: list, rank: np.ndarray) -> np.ndarray:
    """Keeper index per alive row with a sha256 (DuckDB window over the whole metadata)."""
    import duckdb

    idx = np.flatnonzero(alive & np.array([s is not None for s in sha]))
    t = pa.table({"i": idx, "sha": [sha[i] for i in idx], "r": rank[idx]})
    con = duckdb.connect()
    con.register("t", t)
    res = con.sql("SELECT i, first_value(i) OVER (PARTITION BY sha ORDER BY r) AS k FROM t").to_arrow_table()
    con.close()
    keep = np.full(len(alive), -1, dtype=np.int64)
    keep[res.column("i").to_numpy()] = res.column("k").to_numpy()
    return keep


def _phash(alive: np.ndarray, hashes: list, rank: np.ndarray, radius: int) -> tuple[np.ndarray, int]:
    idx = np.flatnonzero(alive & np.array([h is not None for h in hashes]))
    codes = np.array([int(hashes[i], 16) for i in idx], dtype=np.uint64)
    pairs = mih.near_pairs(codes, radius)
    uf = UnionFind(len(idx))
    for a, b in pairs:
        uf.union(int(a), int(b))
    keep = np.full(len(alive), -1, dtype=np.int64)
    if len(idx):
        keep[idx] = idx[keepers(uf.labels(), rank[idx])]
    return keep, len(pairs)


def _remove(parent, reason, alive, keep, why) -> int:
    """Mark rows whose keeper is another row as removed with ``why``."""
    rm = (keep >= 0) & (keep != np.arange(len(keep)))
    parent[rm] = keep[rm]
    reason[rm] = why
    alive &= ~rm
    return int(rm.sum())


def find_duplicates_reference(ds: Dataset, cfg: DedupConfig, *, map=None) -> DedupResult:
    """Run every configured detector over ``ds`` in this process (tests and benchmarks only).

    ``map(fn, items, **kw)`` (e.g. ``cluster.map_tasks``) runs pHash computing and the
    pairwise SemDeDup step as tasks; None runs everything here. The policy is the one
    stated in :mod:`curation.dedup.core`.
    """
    methods = resolve_methods(ds, cfg)
    cols = [c for c in ("uid", "sha256", "tar_offset", "clip_score", "phash") if c in ds.columns]
    meta = ds.read_meta(columns=cols)
    uids = meta.column("uid").to_pylist()
    if len(set(uids)) != len(uids):
        raise DatasetError(f"{ds.url}: column 'uid' is not unique; dedup needs unique uids")
    n = len(uids)
    has_img = meta.column("tar_offset").is_valid().to_numpy(zero_copy_only=False)
    scores = (meta.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float64)
              if "clip_score" in cols else None)
    rank = keep_rank(np.array(uids, dtype=object).astype(str), scores)
    alive, parent = has_img.copy(), np.full(n, -1, dtype=np.int64)
    reason = np.full(n, None, dtype=object)
    stats: dict[str, Any] = {"methods": methods, "removed": {}, "timings_s": {}}
    t = time.perf_counter()

    emb = has_emb = None
    if "semantic" in methods or cfg.eval_set:
        emb, has_emb = read_embeddings_aligned(ds, uids)
    if cfg.eval_set:
        from curation.dedup.decontam import contaminated, load_eval_embeddings

        model = cfg.eval_model or (ds.embeddings or {}).get("model", "").split("/", 1)[0] or None
        ev = load_eval_embeddings(cfg.eval_set, model=model, pretrained=cfg.eval_pretrained)
        assert emb is not None and has_emb is not None
        cand = np.flatnonzero(alive & has_emb)
        mask, _ = contaminated(emb[cand], ev, cfg.eval_eps or cfg.eps)
        reason[cand[mask]] = "eval_contamination"
        alive[cand[mask]] = False
        stats["removed"]["eval_contamination"] = int(mask.sum())
    if "exact" in methods:
        keep = _exact(alive, meta.column("sha256").to_pylist(), rank)
        stats["removed"]["exact"] = _remove(parent, reason, alive, keep, "exact")
    stats["timings_s"]["exact"] = round(time.perf_counter() - t, 3)

    hashes = None
    if "phash" in methods or "phash" in cols:
        t = time.perf_counter()
        hashes = compute_phashes(ds, meta.column("phash").to_pylist() if "phash" in cols else None, uids, has_img, map)
        stats["timings_s"]["phash_compute"] = round(time.perf_counter() - t, 3)
    if "phash" in methods:
        t = time.perf_counter()
        assert hashes is not None
        keep, npairs = _phash(alive, hashes, rank, cfg.phash_radius)
        stats["removed"]["phash"] = _remove(parent, reason, alive, keep, "phash")
        stats["phash_pairs"] = npairs
        stats["timings_s"]["phash_search"] = round(time.perf_counter() - t, 3)
    if "semantic" in methods:
        stats["removed"]["semantic"] = _semantic(cfg, emb, alive & has_emb, parent, reason, alive, stats, map, uids)

    root = np.where(parent >= 0, parent, np.arange(n))
    while True:  # pointer jumping: every chain ends at a kept sample
        nxt = np.where(parent[root] >= 0, parent[root], root)
        if (nxt == root).all():
            break
        root = nxt
    dup_of = [uids[root[i]] if parent[i] >= 0 else None for i in range(n)]
    stats["kept"] = int(alive.sum())
    stats["with_image"] = int(has_img.sum())
    return DedupResult(uids, dup_of, reason.tolist(), hashes, stats)


def _semantic(cfg, emb, cand_mask, parent, reason, alive, stats, map, uids) -> int:
    from curation.dedup.semantic import semdedup
    from curation.dedup.work import uid_hash

    idx = np.flatnonzero(cand_mask)
    if not len(idx):
        return 0
    k = cfg.n_clusters or math.ceil(len(idx) / cfg.cluster_size)
    res = semdedup(emb[idx], eps=cfg.eps, n_clusters=k, niter=cfg.niter, sample_size=cfg.sample_size,
                   keep=cfg.keep, seed=cfg.seed, kmeans=cfg.kmeans, block=cfg.block, map=map,
                   keys=uid_hash([uids[i] for i in idx]))
    rm = idx[res.removed]
    parent[rm] = idx[res.target[res.removed]]
    reason[rm] = "semantic"
    alive[rm] = False
    stats["semantic"] = {"n_clusters": res.n_clusters, "candidates": int(len(idx)),
                         **{k2: round(v, 3) for k2, v in res.timings.items()}}
    return int(len(rm))
