"""Near-duplicate search in Hamming space: multi-index hashing, applied recursively.

Pigeonhole (Norouzi et al. 2012): split the bits two codes may differ in into ``r + 1``
disjoint bands; if the codes differ in at most ``r`` of those bits, at least one band is
identical. So bucketing by (band, band value) puts every pair within radius ``r`` into at
least one common bucket (no misses), and candidates are verified by their exact Hamming
distance (no false positives).

One level of bands is not enough at scale: with ``r = 4`` the 64 bits give 5 bands of 13
bits, so a bucket holds ``N / 8192`` codes and the candidate pairs grow as ``N^2`` (385M
at 1M rows). :func:`grouped_near_pairs` therefore applies the principle again *inside* a
bucket: the members of a bucket agree on its band, so a pair within ``r`` differs only in
the remaining (free) bits, and splitting those into ``r + 1`` sub-bands again gives one
sub-band where the pair agrees. A bucket larger than ``leaf`` codes is split this way
until its pieces hold at most ``leaf`` codes (each split narrows the free bits, so it
ends), and only those small pieces are verified pair by pair. The expected size of the
verified buckets stays constant as N grows; every code is copied ``r + 1`` times per
level, and the number of levels grows with ``log N``. No probing of neighbouring values
is needed, so a bucket's whole subtree is found from its own members: the distributed
dedup partitions by the first-level (band, value) and runs the deeper levels in the task
(:mod:`curation.dedup.components`).

Identical codes are collapsed first, so exact-duplicate groups (flat images) never make
quadratic candidate lists.
"""
from __future__ import annotations

import numpy as np

ALL_BITS = (1 << 64) - 1
LEAF = 24          # buckets of at most this many distinct codes are verified pair by pair
SPLIT_COST = 4.0   # one copy of a code into a sub-band, in verified pairs (measured: sort vs xor-popcount)
CHUNK = 1 << 18    # bucket entries handled at once (bounds memory however large the input)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def popcount64(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x.astype(np.uint64))


def split_mask(mask: int, parts: int) -> list[int]:
    """The set bits of ``mask`` (from bit 0 up) cut into ``parts`` runs, widths differing by <= 1,
    the wider runs first; as masks. Raises ValueError when ``mask`` has fewer than ``parts`` bits."""
    bits = [i for i in range(64) if (mask >> i) & 1]
    if parts < 1 or parts > len(bits):
        raise ValueError(f"cannot split {len(bits)} bits into {parts} bands")
    widths = [len(bits) // parts + (1 if i < len(bits) % parts else 0) for i in range(parts)]
    out, at = [], 0
    for w in widths:
        m = 0
        for b in bits[at:at + w]:
            m |= 1 << b
        out.append(m)
        at += w
    return out


def band_masks(radius: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of the ``radius + 1`` contiguous first-level bands covering all bits,
    widths differing by <= 1 (the same bands as ``split_mask(ALL_BITS, radius + 1)``)."""
    n = radius + 1
    if n > bits:
        raise ValueError(f"radius {radius} too large for {bits}-bit codes")
    widths = [bits // n + (1 if i < bits % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, size) of each run of equal values in ``sorted_keys``."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


class _Found:
    """Verified pairs (code ids) and the number of candidate pairs looked at."""

    def __init__(self, codes: np.ndarray, radius: int):
        self.codes, self.radius = codes, radius
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.candidates = 0

    def verify(self, a: np.ndarray, b: np.ndarray) -> None:
        self.candidates += len(a)
        ok = np.bitwise_count(self.codes[a] ^ self.codes[b]) <= self.radius
        if ok.any():
            self.a.append(a[ok])
            self.b.append(b[ok])

    def small_groups(self, cid: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> None:
        """All pairs inside each group (cid sorted by group; groups of 2..LEAF-ish members)."""
        for s in np.unique(sizes):
            if s < 2:
                continue
            st = starts[sizes == s]
            members = cid[st[:, None] + np.arange(s)]
            i, j = np.triu_indices(int(s), k=1)
            self.verify(members[:, i].ravel(), members[:, j].ravel())

    def big_group(self, ids: np.ndarray, cells: int = 1 << 22) -> None:
        """All pairs of one group that is not split further, in tiles of <= ``cells`` pairs."""
        m = len(ids)
        rows = max(1, cells // m)
        for i0 in range(0, m - 1, rows):
            i, j = _tile(i0, min(m, i0 + rows), m)
            self.verify(ids[i], ids[j])

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        if not self.a:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), self.candidates
        a, b = np.concatenate(self.a).astype(np.int64), np.concatenate(self.b).astype(np.int64)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        pair = np.unique(np.stack([lo, hi], axis=1), axis=0)  # a pair can meet in several buckets
        return pair[:, 0], pair[:, 1], self.candidates


def _tile(i0: int, i1: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i0 <= i < i1, i < j < m."""
    i = np.repeat(np.arange(i0, i1), m)
    j = np.tile(np.arange(m), i1 - i0)
    keep = j > i
    return i[keep], j[keep]


def grouped_near_pairs(group: np.ndarray, cid: np.ndarray, codes: np.ndarray, free: np.ndarray, radius: int,
                       leaf: int | None = None, chunk: int | None = None,
                       split_cost: float | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs ``(a, b)``, ``a < b``, of code ids that share a group and are within ``radius`` bits.

    Args:
        group: uint64 group key per entry (entry ``i`` puts code ``cid[i]`` into ``group[i]``).
        cid: code id per entry (an index into ``codes``), distinct within a group.
        codes: distinct uint64 codes.
        free: uint64 mask per entry, the same within a group: two members of a group
            that are within ``radius`` differ only in these bits (members agree outside
            them: the group was formed by equal values of the other bits).
        leaf: groups of at most this many entries are verified pair by pair; larger
            ones are split recursively (module docstring). Default :data:`LEAF`.
        chunk: entries processed at once (whole groups), so memory stays bounded.
            Default :data:`CHUNK`.
        split_cost: the cost of copying one entry into a sub-band, in verified pairs: a
            group is split only when that makes less work than verifying it whole.
            Default :data:`SPLIT_COST`.

    Returns:
        ``(a, b, candidates)``: every such pair once, sorted; ``candidates`` = the code
        pairs whose distance was computed.
    """
    leaf = LEAF if leaf is None else leaf
    chunk = CHUNK if chunk is None else chunk
    split_cost = SPLIT_COST if split_cost is None else split_cost
    codes = np.asarray(codes, dtype=np.uint64)
    found = _Found(codes, radius)
    parts = radius + 1
    min_width = max(1, parts.bit_length())
    table: dict[int, np.ndarray] = {}  # free mask -> its parts sub-band masks

    def sub_masks(free_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uniq, inv = np.unique(free_masks, return_inverse=True)
        for m in uniq.tolist():
            if m not in table:
                table[m] = np.array(split_mask(int(m), parts), dtype=np.uint64)
        return np.stack([table[m] for m in uniq.tolist()]), inv

    stack = [_chunks(np.asarray(group, dtype=np.uint64), np.asarray(cid, dtype=np.int64),
                     np.asarray(free, dtype=np.uint64), chunk)]
    while stack:
        try:
            g, c, f = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        starts, sizes = _runs(g)
        esize = np.repeat(sizes, sizes)
        # a group is split only when its sub-bands are wide enough to shrink it (2^width > parts)
        splittable = np.bitwise_count(f) // parts >= min_width
        small = sizes <= leaf
        found.small_groups(c, starts[small], sizes[small])
        # a large group with narrow free bits is verified whole (also when only some of its
        # entries are, which happens only when two groups' 64-bit keys collide)
        whole = ~small & ~np.logical_and.reduceat(splittable, starts) if len(starts) else small
        for s, n in zip(starts[whole], sizes[whole]):
            found.big_group(c[s:s + n])
        sel = (esize > leaf) & splittable
        if not sel.any():
            continue
        parent = np.repeat(np.arange(len(starts)), sizes)[sel]
        gs, cs, fs = g[sel], c[sel], f[sel]
        masks, inv = sub_masks(fs)
        keys, frees = [], []
        for k in range(parts):
            mk = masks[inv, k]
            with np.errstate(over="ignore"):
                salt = _mix(gs + np.uint64(k + 1) * _GOLDEN)
            keys.append(_mix(salt ^ (codes[cs] & mk)))
            frees.append(fs & ~mk)
        key, cc, ff, pp = np.concatenate(keys), np.tile(cs, parts), np.concatenate(frees), np.tile(parent, parts)
        order = np.argsort(key)
        key, cc, ff, pp = key[order], cc[order], ff[order], pp[order]
        st, sz = _runs(key)
        # split a group only where it pays: its pieces' pairs plus the copies cost less than
        # its own pairs (a cluster of mutually close codes does not shrink when split)
        after = np.zeros(len(starts))
        np.add.at(after, pp[st], sz * (sz - 1) / 2)
        after += split_cost * parts * sizes
        worth = after < sizes * (sizes - 1) / 2
        for p in np.unique(parent[~worth[parent]]):
            found.big_group(c[starts[p]:starts[p] + sizes[p]])
        keep = np.repeat(sz >= 2, sz) & worth[pp]  # a lone code has no pair in its sub-band
        stack.append(_chunks(key[keep], cc[keep], ff[keep], chunk))
    return found.result()


def _chunks(g: np.ndarray, c: np.ndarray, f: np.ndarray, chunk: int):
    """``(group, cid, free)`` sorted by group, in pieces of about ``chunk`` entries (whole groups)."""
    if len(g) and np.any(g[1:] < g[:-1]):
        order = np.argsort(g)
        g, c, f = g[order], c[order], f[order]
    n = len(g)
    at = 0
    while at < n:
        end = min(n, at + chunk)
        if end < n:  # extend to the end of the group cut at ``end``
            end = int(np.searchsorted(g, g[end - 1], side="right"))
        yield g[at:end], c[at:end], f[at:end]
        at = end


def unique_code_pairs(codes: np.ndarray, radius: int, leaf: int | None = None) -> np.ndarray:
    """Pairs (i, j), i < j, of *distinct* codes within Hamming ``radius`` (codes must be unique)."""
    codes = np.asarray(codes, dtype=np.uint64)
    n = len(codes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    a, b, _ = grouped_near_pairs(np.zeros(n, np.uint64), np.arange(n, dtype=np.int64), codes,
                                 np.full(n, ALL_BITS, dtype=np.uint64), radius, leaf=leaf)
    return np.stack([a, b], axis=1)


def near_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """All pairs (i, j), i < j, of ``codes`` (uint64) with Hamming distance <= ``radius``.

    Guarantee: equals :func:`brute_force_pairs` exactly (sorted rows).
    """
    codes = np.asarray(codes, dtype=np.uint64)
    uniq, inv = np.unique(codes, return_inverse=True)
    upairs = unique_code_pairs(uniq, radius)
    # expand: every member of code a pairs with every member of code b, and within a code
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=len(uniq))
    bounds = np.r_[0, np.cumsum(counts)]
    chunks = [_same_code_pairs(order, bounds, counts)]
    if len(upairs):
        ua, ub = upairs[:, 0], upairs[:, 1]
        na, nb = counts[ua], counts[ub]
        single = (na == 1) & (nb == 1)  # the usual case, vectorised
        chunks.append(np.stack([order[bounds[ua[single]]], order[bounds[ub[single]]]], axis=1))
        for a, b in zip(ua[~single], ub[~single]):
            ma, mb = order[bounds[a]:bounds[a + 1]], order[bounds[b]:bounds[b + 1]]
            chunks.append(np.stack(np.meshgrid(ma, mb, indexing="ij"), -1).reshape(-1, 2))
    pairs = np.concatenate(chunks).astype(np.int64)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _same_code_pairs(order: np.ndarray, bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = [np.empty((0, 2), dtype=np.int64)]
    for u in np.flatnonzero(counts > 1):
        members = np.sort(order[bounds[u]:bounds[u + 1]])
        a, b = np.triu_indices(len(members), k=1)
        out.append(np.stack([members[a], members[b]], axis=1))
    return np.concatenate(out)


def brute_force_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """Reference: all-pairs Hamming distance (O(n^2), tests and benchmark baseline only)."""
    codes = np.asarray(codes, dtype=np.uint64)
    n = len(codes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    a, b = np.triu_indices(n, k=1)
    d = popcount64(codes[a] ^ codes[b])
    return np.stack([a[d <= radius], b[d <= radius]], axis=1).astype(np.int64)
