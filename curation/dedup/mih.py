"""Near-duplicate search in Hamming space with multi-index hashing (Norouzi et al. 2012).

Split the 64-bit codes into ``r + 1`` disjoint bands. If two codes differ in at most ``r``
bits, the pigeonhole principle says at least one band is identical, so bucketing by each
band finds every pair within radius ``r`` (no misses); candidates are then verified by
their exact Hamming distance (no false positives). Identical codes are collapsed first so
that large exact-duplicate groups never produce quadratic candidate lists.
"""
from __future__ import annotations

import numpy as np


def popcount64(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x.astype(np.uint64))


def band_masks(radius: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of ``radius + 1`` contiguous bands covering all bits, widths differing by <= 1."""
    n = radius + 1
    if n > bits:
        raise ValueError(f"radius {radius} too large for {bits}-bit codes")
    widths = [bits // n + (1 if i < bits % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _bucket_pairs(keys: np.ndarray) -> np.ndarray:
    """All (i, j), i < j, of positions whose ``keys`` are equal."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    chunks = []
    for s, n in zip(starts[sizes > 1], sizes[sizes > 1]):
        members = np.sort(order[s:s + n])
        a, b = np.triu_indices(n, k=1)
        chunks.append(np.stack([members[a], members[b]], axis=1))
    return np.concatenate(chunks) if chunks else np.empty((0, 2), dtype=np.int64)


def unique_code_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """Pairs (i, j), i < j, of *distinct* codes within Hamming ``radius`` (codes must be unique)."""
    codes = codes.astype(np.uint64)
    found = []
    for shift, width in band_masks(radius):
        band = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        cand = _bucket_pairs(band)
        if len(cand):
            dist = popcount64(codes[cand[:, 0]] ^ codes[cand[:, 1]])
            found.append(cand[dist <= radius])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def near_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """All pairs (i, j), i < j, of ``codes`` (uint64) with Hamming distance <= ``radius``.

    Guarantee: equals :func:`brute_force_pairs` exactly (sorted rows).
    """
    codes = np.asarray(codes, dtype=np.uint64)
    uniq, inv = np.unique(codes, return_inverse=True)
    upairs = unique_code_pairs(uniq, radius)
    # expand: every member of code a pairs with every member of code b, and within a code
    order = np.argsort(inv, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=len(uniq)))]
    members = [order[bounds[u]:bounds[u + 1]] for u in range(len(uniq))]
    chunks = [_bucket_pairs(inv)]
    for a, b in upairs:
        ma, mb = members[a], members[b]
        chunks.append(np.stack(np.meshgrid(ma, mb, indexing="ij"), -1).reshape(-1, 2))
    pairs = np.concatenate(chunks).astype(np.int64)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def brute_force_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """Reference: all-pairs Hamming distance (O(n^2), tests and benchmark baseline only)."""
    codes = np.asarray(codes, dtype=np.uint64)
    n = len(codes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    a, b = np.triu_indices(n, k=1)
    d = popcount64(codes[a] ^ codes[b])
    return np.stack([a[d <= radius], b[d <= radius]], axis=1).astype(np.int64)
