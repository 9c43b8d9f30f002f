"""Algorithm-level guarantees: MIH == brute force, SemDeDup == a plain reference, pHash sanity."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.dedup import mih, semantic
from curation.dedup.groups import UnionFind, keep_rank, keepers
from curation.dedup.phash import phash_bytes


# -- multi-index hashing -------------------------------------------------------------------
def _mutate(rng, codes, n, max_flips):
    base = codes[rng.integers(0, len(codes), n)]
    out = []
    for c in base:
        c = int(c)
        for b in rng.choice(64, rng.integers(0, max_flips + 1), replace=False):
            c ^= 1 << int(b)
        out.append(c)
    return np.array(out, dtype=np.uint64)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.integers(0, 8), n=st.integers(0, 120))
def test_mih_equals_brute_force(seed, radius, n):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, max(1, n // 3), dtype=np.uint64) * np.uint64(2)
    codes = np.concatenate([base, _mutate(rng, base, n, radius + 2)])[:max(n, 0)] if n else base[:0]
    got = mih.near_pairs(codes, radius)
    want = mih.brute_force_pairs(codes, radius)
    assert got.tolist() == want.tolist()


def test_mih_finds_pair_at_exact_radius_and_not_beyond():
    a = 0x0123456789ABCDEF
    at_r = a ^ 0b1111            # distance 4
    beyond = a ^ 0b11111 << 40   # distance 5
    pairs = mih.near_pairs(np.array([a, at_r, beyond], dtype=np.uint64), 4).tolist()
    assert pairs == [[0, 1]]


def _clustered_codes(rng, n, radius, shared_bits=0):
    """Codes in tight clusters (many within ``radius + 2`` bits of one another); the low
    ``shared_bits`` bits equal in all of them, so the first-level buckets hold every code."""
    base = rng.integers(0, 2**63, max(1, n // 8), dtype=np.uint64) * np.uint64(2)
    codes = _mutate(rng, base, n, radius + 2)
    keep = np.uint64(((1 << 64) - 1) ^ ((1 << shared_bits) - 1))
    return np.unique((codes & keep) | np.uint64(0x5A5A & ((1 << shared_bits) - 1)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.integers(0, 8), n=st.integers(0, 300),
       leaf=st.sampled_from([2, 3, 24]), split_cost=st.sampled_from([0.0, 4.0]), shared=st.sampled_from([0, 13]))
def test_recursive_split_equals_brute_force(seed, radius, n, leaf, split_cost, shared):
    """However deep the buckets are split (leaf 2, free splits) and however clustered the
    codes, the pairs are exactly the brute-force ones."""
    codes = _clustered_codes(np.random.default_rng(seed), n, radius, shared)
    k = len(codes)
    a, b, cand = mih.grouped_near_pairs(np.zeros(k, np.uint64), np.arange(k), codes,
                                        np.full(k, mih.ALL_BITS, np.uint64), radius, leaf=leaf,
                                        split_cost=split_cost, chunk=64)
    assert np.stack([a, b], 1).tolist() == mih.brute_force_pairs(codes, radius).tolist()
    assert cand >= len(a)


def test_candidates_grow_linearly_when_a_band_is_shared():
    """All codes share one 13-bit band (one first-level bucket holds them all): one level of
    bands would look at n^2 / 2 pairs; splitting the bucket keeps the candidates per code
    bounded as n grows 16x (they saw-tooth with the depth of the split, never grow with n)."""
    rng = np.random.default_rng(7)
    per_code = {}
    for n in (5_000, 20_000, 80_000):
        codes = np.unique((rng.integers(0, 2**63, n, dtype=np.uint64) << np.uint64(13)) | np.uint64(0x1234))
        codes = np.concatenate([codes, codes[:50] ^ np.uint64(0b1011 << 20)])  # 50 pairs at distance 3
        k = len(codes)
        band = codes & np.uint64((1 << 13) - 1)  # the distributed first level: bucket by band 0
        a, b, cand = mih.grouped_near_pairs(band, np.arange(k), codes,
                                            np.full(k, mih.ALL_BITS ^ ((1 << 13) - 1), np.uint64), 4)
        assert len(a) == 50 and (np.bitwise_count(codes[a] ^ codes[b]) == 3).all()
        per_code[n] = cand / k
    assert max(per_code.values()) < 64, per_code  # one level: n / 2 per code (2,500 to 40,000)


def test_split_mask_and_first_level_bands_agree():
    assert [((1 << w) - 1) << s for s, w in mih.band_masks(4)] == mih.split_mask(mih.ALL_BITS, 5)
    assert mih.split_mask(0b1011_0110, 2) == [0b0001_0110, 0b1010_0000]  # 3 bits, then 2
    with pytest.raises(ValueError):
        mih.split_mask(0b11, 3)


# -- SemDeDup --------------------------------------------------------------------------------
def reference_semdedup(x, labels, cos_to_cent, eps, keep="hard"):
    """Straight from the paper's code: per cluster, sort by distance to centroid (descending
    for hard), full pairwise cosine, triu(1), column max > 1 - eps => removed."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    removed = np.zeros(len(x), dtype=bool)
    for c in np.unique(labels):
        items = np.flatnonzero(labels == c)
        dist = 1 - cos_to_cent[items].astype(np.float64)
        order = sorted(range(len(items)), key=lambda i: dist[i], reverse=True)  # stable, like sorted()
        if keep == "easy":
            order = order[::-1]
        idx = items[order]
        sim = x[idx] @ x[idx].T
        np.fill_diagonal(sim, 0.0)
        m = np.triu(sim, 1).max(0)
        removed[idx] = m > 1 - eps
    return removed


def _clustered(rng, n, d, centres, noise):
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, d)).astype(np.float32)
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("keep", ["hard", "easy"])
def test_semdedup_equals_reference(kind, keep):
    rng = np.random.default_rng(7)
    if kind == "random":
        x = rng.normal(size=(600, 16)).astype(np.float32)
        eps = 0.35  # random 16-d vectors: a real fraction of pairs crosses 0.65 cosine
    else:
        x = _clustered(rng, 800, 32, 40, 0.08)
        eps = 0.01
    # small block forces multi-tile clusters so the blocked path is what is compared
    res = semantic.semdedup(x, eps=eps, n_clusters=6, niter=10, keep=keep, seed=3, block=37)
    xn = semantic.l2_normalize(x)
    labels, sims = semantic.spherical_kmeans(xn, 6, niter=10, seed=3)
    assert (labels == res.labels).all()
    want = reference_semdedup(xn, labels, sims, eps, keep)
    assert 0 < want.sum() < len(x)
    assert res.removed.tolist() == want.tolist()
    # every removed item points to an earlier item of its own cluster that is above the threshold
    t = res.target[res.removed]
    assert (res.labels[t] == res.labels[res.removed]).all()
    assert ((xn[t] * xn[res.removed]).sum(1) > 1 - eps - 1e-5).all()


def test_semdedup_on_ray_equals_local(ray_local):
    rng = np.random.default_rng(1)
    x = _clustered(rng, 500, 24, 30, 0.05)
    from curation.cluster import map_tasks

    a = semantic.semdedup(x, eps=0.02, n_clusters=8, seed=0)
    b = semantic.semdedup(x, eps=0.02, n_clusters=8, seed=0, map=map_tasks, n_tasks=4)
    assert a.removed.tolist() == b.removed.tolist() and a.target.tolist() == b.target.tolist()


def test_random_keep_is_seeded_and_two_level_kmeans_covers_all():
    rng = np.random.default_rng(2)
    x = semantic.l2_normalize(_clustered(rng, 3000, 16, 50, 0.1))
    labels, sims = semantic.spherical_kmeans(x, 300, niter=5, seed=0, mode="two_level")
    assert labels.min() == 0 and len(np.unique(labels)) > 200 and np.isfinite(sims).all()
    p1, _ = semantic.keep_order(labels, sims, "random", 5)
    p2, _ = semantic.keep_order(labels, sims, "random", 5)
    assert p1.tolist() == p2.tolist() and sorted(p1.tolist()) == list(range(len(x)))


# -- groups and pHash ------------------------------------------------------------------------
def test_keep_policy_prefers_score_then_uid():
    uids = np.array(["c", "a", "b", "d"])
    rank = keep_rank(uids, np.array([0.1, np.nan, 0.1, 0.3]))
    assert rank.tolist() == [2, 3, 1, 0]  # d (0.3), b (0.1, uid b < c), c, a (no score)
    uf = UnionFind(4)
    uf.union(0, 1)
    uf.union(1, 2)
    assert keepers(uf.labels(), rank).tolist() == [2, 2, 2, 3]


def test_phash_robust_to_reencoding_and_distinct_for_other_images():
    from PIL import Image, ImageDraw

    def draw(shape, colour, size=128):
        im = Image.new("RGB", (size, size), (30, 90, 160))
        d = ImageDraw.Draw(im)
        (d.ellipse if shape == "circle" else d.rectangle)([20, 30, 100, 110], fill=colour)
        return im

    def enc(im, fmt="PNG", **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    a = phash_bytes(enc(draw("circle", (250, 200, 0))))
    a_jpeg = phash_bytes(enc(draw("circle", (250, 200, 0)).resize((96, 96)), "JPEG", quality=70))
    b = phash_bytes(enc(draw("square", (250, 200, 0)).rotate(90)))
    assert a is not None and a_jpeg is not None and b is not None
    assert bin(a ^ a_jpeg).count("1") <= 4
    assert bin(a ^ b).count("1") > 8
    assert phash_bytes(b"not an image") is None
