"""SemDeDup (Abbas et al. 2023) over L2-normalised embeddings, pairwise work as Ray tasks.

Faithful to the official implementation (facebookresearch/SemDeDup):

1. Spherical k-means (faiss, ``spherical=True``) trained on a seeded random sample of
   ``sample_size`` points (all points when fewer), ``niter`` iterations; every point is then
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
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


# -- k-means -----------------------------------------------------------------------------
def _train(x: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (unit norm) of ``x``."""
    import faiss

    k = max(1, min(k, len(x)))
    if k == 1:
        return l2_normalize(x.mean(0, keepdims=True))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 30)
    km.train(x)
    return l2_normalize(km.centroids)


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by inner product (= cosine for unit vectors): (labels, cos)."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sim, lab = index.search(x, 1)
    return lab[:, 0].astype(np.int64), sim[:, 0]


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if size >= n else np.sort(rng.choice(n, size, replace=False))


def spherical_kmeans(x: np.ndarray, k: int, *, niter: int = 20, sample_size: int = 100_000,
                     seed: int = 0, mode: str = "auto",
                     timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit vectors ``x``: returns (cluster label per point, cosine to its centroid).

    ``timings`` (optional) receives ``kmeans_fit_s`` and ``assign_s``.
    """
    timings = {} if timings is None else timings
    timings.setdefault("kmeans_fit_s", 0.0)
    timings.setdefault("assign_s", 0.0)
    n = len(x)
    rng = np.random.default_rng(seed)
    k = max(1, min(k, n))
    if mode == "auto":
        mode = "flat" if k <= 256 else "two_level"
    if mode not in ("flat", "two_level"):
        raise ValueError(f"kmeans must be auto, flat or two_level (got {mode!r})")

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

    if mode == "flat":
        return assign(x, train(x[_sample(n, sample_size, rng)], k, seed))
    k1 = math.ceil(math.sqrt(k))
    lab1, _ = assign(x, train(x[_sample(n, sample_size, rng)], k1, seed))
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    offset = 0
    for c in range(k1):
        idx = np.flatnonzero(lab1 == c)
        if not len(idx):
            continue
        kc = max(1, min(len(idx), round(k * len(idx) / n)))
        share = max(int(sample_size * len(idx) / n), 40 * kc)
        xc = x[idx]
        lab, sim = assign(xc, train(xc[_sample(len(idx), share, rng)], kc, seed + c + 1))
        labels[idx] = lab + offset
        sims[idx] = sim
        offset += kc
    return labels, sims


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

    Row 0 gets (-inf, -1). Computed in ``block``-sized tiles of the upper triangle.
    """
    s = len(e)
    best = np.full(s, -np.inf, dtype=np.float32)
    arg = np.full(s, -1, dtype=np.int64)
    for j0 in range(0, s, block):
        j1 = min(s, j0 + block)
        ej = e[j0:j1]
        for i0 in range(0, j1, block):
            i1 = min(s, i0 + block)
            sim = e[i0:i1] @ ej.T
            if i0 == j0:  # diagonal tile: only i < j counts
                sim[np.tril_indices(i1 - i0, 0, j1 - j0)] = -np.inf
            m = sim.max(0)
            better = m > best[j0:j1]  # strict: an earlier tile (smaller i) wins ties
            best[j0:j1][better] = m[better]
            arg[j0:j1][better] = sim.argmax(0)[better] + i0
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
             use_ray: bool = True, tasks_per_cpu: int = 4) -> SemDedupResult:
    """Run SemDeDup over embeddings ``x`` (n x d, normalised here). See the module docstring."""
    t0 = time.perf_counter()
    x = l2_normalize(x)
    n = len(x)
    if n == 0:
        e = np.zeros(0, dtype=bool)
        return SemDedupResult(e, np.zeros(0, np.int64), np.zeros(0, np.int64))
    t1 = time.perf_counter()
    km_t: dict[str, float] = {}
    labels, sims = spherical_kmeans(x, n_clusters, niter=niter, sample_size=sample_size, seed=seed,
                                    mode=kmeans, timings=km_t)
    t2 = time.perf_counter()
    perm, bounds = keep_order(labels, sims, keep, seed)
    t3 = time.perf_counter()
    removed = np.zeros(n, dtype=bool)
    target = np.full(n, -1, dtype=np.int64)
    for idx, (rm, tg) in _run_pairwise(x, perm, bounds, eps, block, use_ray, tasks_per_cpu):
        removed[idx] = rm
        target[idx] = tg
    t4 = time.perf_counter()
    return SemDedupResult(removed, target, labels, n_clusters=int(len(bounds) - 1), timings={
        "normalize_s": t1 - t0, **km_t, "order_s": t3 - t2, "pairwise_s": t4 - t3})


def _run_pairwise(x: np.ndarray, perm: np.ndarray, bounds: np.ndarray, eps: float, block: int,
                  use_ray: bool, tasks_per_cpu: int) -> list[tuple[np.ndarray, Any]]:
    if not use_ray:
        clusters = [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return list(zip(clusters, pairwise_chunk(clusters, emb=x, eps=eps, block=block)))
    import ray

    from curation.runner.ray_utils import ensure_ray, map_tasks

    ensure_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    chunks = [[perm[a:b] for a, b in ch] for ch in _balanced_chunks(bounds, max(1, cpus * tasks_per_cpu))]
    ref = ray.put(x)  # one copy in the object store, read zero-copy by every task
    outs = map_tasks(pairwise_chunk, chunks, emb=ref, eps=eps, block=block)
    return [(idx, o) for chunk, res in zip(chunks, outs) for idx, o in zip(chunk, res)]
