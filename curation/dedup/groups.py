"""Grouping helpers: union-find, and the keep policy shared by exact and pHash dedup.

Keep policy (deterministic, stated): within a duplicate group the sample with the highest
``clip_score`` is kept (null scores rank last); ties, or no scores at all, keep the
lowest ``uid`` (string order). Every other member gets ``dup_of`` = the kept uid.
"""
from __future__ import annotations

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return int(x)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def keep_rank(uids: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """Rank of every item under the keep policy (0 = most preferred), a total order."""
    n = len(uids)
    uid_rank = np.empty(n, dtype=np.int64)
    uid_rank[np.argsort(uids, kind="stable")] = np.arange(n)
    if scores is None:
        return uid_rank
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((uid_rank, -s))  # last key primary: score desc, then uid asc
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def keepers(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each item, the index of its group's kept item (the lowest ``rank`` in its label)."""
    order = np.lexsort((rank, labels))
    lab = labels[order]
    first = np.r_[True, lab[1:] != lab[:-1]]
    head = order[first]
    group_idx = np.cumsum(first) - 1
    out = np.empty(len(labels), dtype=np.int64)
    out[order] = head[group_idx]
    return out
