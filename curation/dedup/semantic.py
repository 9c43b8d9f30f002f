"""SemDeDup (Abbas et al. 2023) over L2-normalised embeddings: the algorithm's parts.

Faithful to the official implementation (facebookresearch/SemDeDup):

1. Spherical k-means (faiss, ``spherical=True``) trained on a seeded sample of about
   ``sample_size`` points (all points when fewer; each point is in or out by its own
   hashed key, see :func:`sample_mask`), ``niter`` iterations; every point is then
   assigned to its nearest centroid by cosine similarity.
2. Within each cluster, items are ordered by cosine distance to the centroid
   (``1 - cos``): ``keep="hard"`` sorts descending (farthest/hardest first, the paper's
   default, ``sort_clusters.py`` with ``keep_hard=True``), ``"easy"`` is the reverse of that
   order, ``"random"`` a seeded shuffle. Ties in distance break by dataset position.
3. Item j is removed when ``max_{i<j} cos(x_i, x_j) > 1 - eps``, the max running over *all*
   earlier items whether or not they are removed themselves (``torch.triu(S, 1).max(0)``).
   Consequently the first item of every cluster is always kept.

Clusters are processed in column blocks (``block`` x ``block`` matmuls with a running
column max), so memory is O(block^2) whatever the cluster size. Each removed item also
records its most similar earlier item, which the stage resolves to a kept sample (``dup_of``).

For large k, ``kmeans="two_level"`` (the default above 256 clusters) first clusters into
``ceil(sqrt(k))`` coarse cells and then runs spherical k-means inside each cell with a
proportional share of k: assignment costs O(N sqrt(k) d) instead of O(N k d), which keeps the
whole pipeline linear in N at a fixed cluster size. Only the partition changes; the
within-cluster rule above is untouched.

:func:`semdedup` runs all of it over one in-memory matrix (the reference, and the unit
tests' subject); :mod:`curation.dedup.semantic_dist` runs the same functions over a
dataset without any process holding the n x d matrix, with identical results.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def l2_normalize(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` scaled to unit norm (float32); ``out`` (optional) receives them.

    Row by row: a row's result does not depend on the other rows given with it."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, np.maximum(n, 1e-12), out=out)


# -- k-means -----------------------------------------------------------------------------
def _train(x: np.ndarray, k: int, niter: int, seed: int, threads: int | None = None) -> np.ndarray:
    """Spherical k-means centroids (unit norm) of ``x``; ``threads`` caps faiss's threads."""
    import faiss

    k = max(1, min(k, len(x)))
    if k == 1:
        return l2_normalize(x.mean(0, keepdims=True))
    before = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        km = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 30)
        km.train(np.ascontiguousarray(x, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(before)
    return l2_normalize(np.asarray(km.centroids))


ASSIGN_ROWS = 4096  # fixed tile height of the assignment matmul


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by inner product (= cosine for unit vectors): (labels, cos).

    Computed in tiles of exactly :data:`ASSIGN_ROWS` rows (the last one zero-padded), so
    every row goes through the same matmul shape and its result does not depend on which
    other rows share its batch: a task's slice and the whole matrix give the same bits.
    Ties go to the lowest centroid index.
    """
    c = np.ascontiguousarray(centroids, dtype=np.float32).T
    n = len(x)
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    tile = np.zeros((ASSIGN_ROWS, c.shape[0]), dtype=np.float32)
    for a in range(0, n, ASSIGN_ROWS):
        b = min(n, a + ASSIGN_ROWS)
        tile[: b - a] = x[a:b]
        tile[b - a:] = 0.0
        s = tile @ c
        lab = s[: b - a].argmax(1)
        labels[a:b] = lab
        sims[a:b] = s[np.arange(b - a), lab]
    return labels, sims


def sample_mask(keys: np.ndarray, size: int) -> np.ndarray:
    """Which items k-means trains on: all when ``size >= len(keys)``, else those whose
    sampling key (uniform uint64, see :func:`curation.dedup.work.sample_keys`) falls below
    ``size / len(keys)`` of the key space: about ``size`` items, decided item by item, so a
    task can pick its share of the sample without seeing the rest (like NeMo Curator's
    ``fit_data_fraction``)."""
    n = len(keys)
    if size >= n:
        return np.ones(n, dtype=bool)
    thr = (int(size) << 64) // n
    return np.asarray(keys, dtype=np.uint64) < np.uint64(thr)


def default_keys(n: int) -> np.ndarray:
    """Base sampling keys for a bare matrix (no uids): the row number."""
    return np.arange(n, dtype=np.uint64)


def resolve_k(k: int, n: int, mode: str) -> tuple[int, str]:
    """(clusters, mode) actually used for ``n`` points: ``auto`` is flat up to 256 clusters."""
    k = max(1, min(k, n))
    if mode == "auto":
        mode = "flat" if k <= 256 else "two_level"
    if mode not in ("flat", "two_level"):
        raise ValueError(f"kmeans must be auto, flat or two_level (got {mode!r})")
    return k, mode


def cell_plan(sizes: list[int], k: int, n: int, sample_size: int) -> list[tuple[int, int, int]]:
    """Two-level k-means: per coarse cell (clusters kc, sample share, first label offset).

    Empty cells get kc = 0 and take no labels.
    """
    out, offset = [], 0
    for size in sizes:
        if not size:
            out.append((0, 0, offset))
            continue
        kc = max(1, min(size, round(k * size / n)))
        out.append((kc, max(int(sample_size * size / n), 40 * kc), offset))
        offset += kc
    return out


def spherical_kmeans(x: np.ndarray, k: int, *, niter: int = 20, sample_size: int = 100_000,
                     seed: int = 0, mode: str = "auto", keys: np.ndarray | None = None,
                     timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit vectors ``x``: returns (cluster label per point, cosine to its centroid).

    ``keys`` (uint64 per point, default the row number) decide the training sample with
    :func:`sample_mask` (salted per level and cell with ``seed``); a dataset passes its uid
    hashes so every process picks the same sample. ``timings`` (optional) receives
    ``kmeans_fit_s`` and ``assign_s``.
    """
    from curation.dedup.work import sample_keys

    timings = {} if timings is None else timings
    timings.setdefault("kmeans_fit_s", 0.0)
    timings.setdefault("assign_s", 0.0)
    n = len(x)
    base = default_keys(n) if keys is None else np.asarray(keys, dtype=np.uint64)
    k, mode = resolve_k(k, n, mode)

    def train(xs, kk, sd):
        t = time.perf_counter()
        c = _train(xs, kk, niter, sd)
        timings["kmeans_fit_s"] += time.perf_counter() - t
        return c

    def assign(xs, c):
        t = time.perf_counter()
        out = _assign(xs, c)
        timings["assign_s"] += time.perf_counter() - t
        return out

    level1 = sample_mask(sample_keys(base, seed), sample_size)
    if mode == "flat":
        return assign(x, train(x[level1], k, seed))
    k1 = math.ceil(math.sqrt(k))
    lab1, _ = assign(x, train(x[level1], k1, seed))
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    plan = cell_plan(np.bincount(lab1, minlength=k1).tolist(), k, n, sample_size)
    for c, (kc, share, offset) in enumerate(plan):
        if not kc:
            continue
        idx = np.flatnonzero(lab1 == c)
        xc = x[idx]
        pick = sample_mask(sample_keys(base[idx], seed, c + 1), share)
        lab, sim = assign(xc, train(xc[pick], kc, seed + c + 1))
        labels[idx] = lab + offset
        sims[idx] = sim
    return labels, sims


def cluster_order(cos_to_centroid: np.ndarray, keep: str, seed: int, cluster_id: int) -> np.ndarray:
    """SemDeDup order of one cluster's items given in dataset order (same rule as :func:`keep_order`)."""
    m = len(cos_to_centroid)
    dist = 1.0 - np.asarray(cos_to_centroid).astype(np.float64)
    perm = np.lexsort((np.arange(m), -dist))
    if keep == "easy":
        perm = perm[::-1].copy()
    elif keep == "random":
        perm = perm[np.random.default_rng([seed, int(cluster_id)]).permutation(m)]
    elif keep != "hard":
        raise ValueError(f"keep must be hard, easy or random (got {keep!r})")
    return perm


def resolve_in_cluster(removed: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Follow ``target`` (index of the most similar earlier item, -1 when kept) until a kept
    item: the kept item each removed one is finally a duplicate of (-1 for kept ones)."""
    root = np.where(removed, target, -1)
    while True:
        nxt = np.where((root >= 0) & removed[np.maximum(root, 0)], target[np.maximum(root, 0)], root)
        if (nxt == root).all():
            return root
        root = nxt


def keep_order(labels: np.ndarray, cos_to_centroid: np.ndarray, keep: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Permutation listing every cluster's items in SemDeDup order, and cluster start offsets."""
    n = len(labels)
    pos = np.arange(n)
    dist = (1.0 - cos_to_centroid.astype(np.float64))
    # hard: distance descending, ties by position ascending (stable descending sort)
    perm = np.lexsort((pos, -dist, labels))
    starts = np.flatnonzero(np.r_[True, labels[perm][1:] != labels[perm][:-1]]) if n else np.array([], int)
    bounds = np.r_[starts, n]
    if keep == "easy":
        for a, b in zip(bounds[:-1], bounds[1:]):
            perm[a:b] = perm[a:b][::-1].copy()
    elif keep == "random":
        for a, b in zip(bounds[:-1], bounds[1:]):
            cid = int(labels[perm[a]])
            perm[a:b] = perm[a:b][np.random.default_rng([seed, cid]).permutation(b - a)]
    elif keep != "hard":
        raise ValueError(f"keep must be hard, easy or random (got {keep!r})")
    return perm, bounds


# -- pairwise ----------------------------------------------------------------------------
def cluster_max_earlier(e: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For ordered rows ``e`` (unit vectors): max cosine to any earlier row and its index.

    Row 0 gets (-inf, -1); ties go to the earliest row. Computed in ``block`` x ``block``
    tiles of the lower triangle, one matmul each (a tile holds later rows against earlier
    ones, so the reductions run along contiguous rows); memory is O(block^2).
    """
    s = len(e)
    best = np.full(s, -np.inf, dtype=np.float32)
    arg = np.full(s, -1, dtype=np.int64)
    for j0 in range(0, s, block):
        j1 = min(s, j0 + block)
        ej = e[j0:j1]
        for i0 in range(0, j1, block):
            i1 = min(s, i0 + block)
            sim = ej @ e[i0:i1].T  # row r: item j0 + r against items i0..i1-1
            if i0 == j0:  # diagonal tile (square): only earlier items count
                r = np.arange(j1 - j0)
                np.copyto(sim, -np.inf, where=r[:, None] <= r[None, :])
            a = sim.argmax(1)
            m = sim[np.arange(j1 - j0), a]
            better = m > best[j0:j1]  # strict: an earlier tile (smaller i) wins ties
            best[j0:j1][better] = m[better]
            arg[j0:j1][better] = a[better] + i0
    return best, arg


def pairwise_chunk(clusters: list[np.ndarray], *, emb: np.ndarray, eps: float,
                   block: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ray task body: SemDeDup over clusters, each given as row indices of ``emb`` in keep order.

    The gather ``emb[idx]`` happens here, in parallel across tasks, so the driver never
    builds a permuted copy of the whole matrix. Returns per cluster (removed mask, row of
    the most similar earlier item or -1 when kept).
    """
    out = []
    for idx in clusters:
        best, arg = cluster_max_earlier(emb[idx], block)
        removed = best > (1.0 - eps)
        out.append((removed, np.where(removed, idx[np.maximum(arg, 0)], -1)))
    return out


def _balanced_chunks(bounds: np.ndarray, n_tasks: int) -> list[list[tuple[int, int]]]:
    """Split consecutive clusters into ~n_tasks groups of similar pairwise cost (size^2)."""
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    cost = np.array([(b - a) ** 2 + (b - a) for a, b in ranges], dtype=np.float64)
    target = cost.sum() / max(1, n_tasks)
    chunks, cur, acc = [], [], 0.0
    for r, c in zip(ranges, cost):
        cur.append(r)
        acc += c
        if acc >= target:
            chunks.append(cur)
            cur, acc = [], 0.0
    if cur:
        chunks.append(cur)
    return chunks


@dataclass
class SemDedupResult:
    """removed[i]: item i is a semantic duplicate; target[i]: index of its most similar
    earlier item in its cluster (-1 when kept); labels: cluster of each item."""

    removed: np.ndarray
    target: np.ndarray
    labels: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    n_clusters: int = 0


def semdedup(x: np.ndarray, *, eps: float, n_clusters: int, niter: int = 20, sample_size: int = 100_000,
             keep: str = "hard", seed: int = 0, kmeans: str = "auto", block: int = 2048,
             map: Any = None, n_tasks: int = 8, keys: np.ndarray | None = None) -> SemDedupResult:
    """Run SemDeDup over embeddings ``x`` (n x d, normalised here) in one process's memory.

    The dataset path is :mod:`curation.dedup.semantic_dist`, which never builds the n x d
    matrix; this one is the reference it is tested against (and the algorithm's unit).

    Args:
        map: ``map(fn, items, **kw)`` (``Stage.map``/``cluster.map_tasks``) to run the
            pairwise step as ``n_tasks`` tasks; None runs it here.
        keys: per-row base sampling keys for k-means (uid hashes; default the row number).
    """
    t0 = time.perf_counter()
    x = l2_normalize(x)
    n = len(x)
    if n == 0:
        e = np.zeros(0, dtype=bool)
        return SemDedupResult(e, np.zeros(0, np.int64), np.zeros(0, np.int64))
    t1 = time.perf_counter()
    km_t: dict[str, float] = {}
    labels, sims = spherical_kmeans(x, n_clusters, niter=niter, sample_size=sample_size, seed=seed,
                                    mode=kmeans, keys=keys, timings=km_t)
    t2 = time.perf_counter()
    perm, bounds = keep_order(labels, sims, keep, seed)
    t3 = time.perf_counter()
    removed = np.zeros(n, dtype=bool)
    target = np.full(n, -1, dtype=np.int64)
    for idx, (rm, tg) in _run_pairwise(x, perm, bounds, eps, block, map, n_tasks):
        removed[idx] = rm
        target[idx] = tg
    t4 = time.perf_counter()
    return SemDedupResult(removed, target, labels, n_clusters=int(len(bounds) - 1), timings={
        "normalize_s": t1 - t0, **km_t, "order_s": t3 - t2, "pairwise_s": t4 - t3})


def _run_pairwise(x: np.ndarray, perm: np.ndarray, bounds: np.ndarray, eps: float, block: int,
                  map: Any, n_tasks: int) -> list[tuple[np.ndarray, Any]]:
    if map is None:
        clusters = [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return list(zip(clusters, pairwise_chunk(clusters, emb=x, eps=eps, block=block)))
    chunks = [[perm[a:b] for a, b in ch] for ch in _balanced_chunks(bounds, max(1, n_tasks))]
    outs = map(pairwise_chunk, chunks, emb=x, eps=eps, block=block)  # emb: put once, read zero-copy
    return [(idx, o) for chunk, res in zip(chunks, outs) for idx, o in zip(chunk, res)]
