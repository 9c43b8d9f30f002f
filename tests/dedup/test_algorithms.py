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
