"""The distributed dedup equals the single-process reference, row for row, where groups chain.

Datasets are written metadata-only (stored sha256, pHash and embeddings; no images), so the
chains are built by hand: pHash walks whose neighbours are within the radius and whose ends
are not, embedding walks with the same property at ``eps``, exact copies of walk members.
``rows_per_task`` is tiny, so every wave has several groups and partitions and chains cross
them.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest

from curation.dedup.config import DedupConfig
from curation.dedup.reference import find_duplicates_reference
from curation.dedup.stage import DedupStage
from curation.stage import StageContext

from .corpus import chained, meta_only


def _dataset(tmp_path, n_base=60, seed=0, per_shard=37, failed=True):
    c = chained(n_base, seed)
    has = np.ones(len(c["uids"]), bool)
    if failed:
        has[::23] = False  # failed downloads take no part
    ds = meta_only(str(tmp_path / f"ds{seed}"), uids=c["uids"], sha256=c["sha256"], phash=c["phash"],
                   clip_score=c["clip_score"], has_image=has, emb=c["emb"], per_shard=per_shard)
    return ds, c


def _run(ds, config, executor: Any = "local"):
    ctx = StageContext(output=ds.url, executor=executor)
    out = DedupStage(config)(ds, ctx)
    assert ctx.stats is not None
    t = out.read_meta(columns=["uid", "dup_of", "dedup_reason", "phash"])
    return out, ctx, {c: t.column(c).to_pylist() for c in t.column_names}


def _assert_equal(got, ref):
    assert got["uid"] == ref.uid
    diff = [(u, a, b, r1, r2) for u, a, b, r1, r2 in zip(ref.uid, got["dup_of"], ref.dup_of,
                                                         got["dedup_reason"], ref.dedup_reason)
            if (a, r1) != (b, r2)]
    assert not diff, diff[:10]
    assert got["phash"] == ref.phash


def _hamming(a, b):
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_exact_and_phash_chains_equal_reference(tmp_path):
    ds, c = _dataset(tmp_path)
    config = {"methods": ["exact", "phash"], "phash_radius": 4, "rows_per_task": 50}
    out, ctx, got = _run(ds, config)
    assert ctx.stats is not None
    ref = find_duplicates_reference(ds, DedupConfig(**config))
    _assert_equal(got, ref)
    code = dict(zip(got["uid"], got["phash"]))
    ph = [(u, d) for u, d, r in zip(got["uid"], got["dup_of"], got["dedup_reason"]) if r == "phash"]
    assert sum(_hamming(code[u], code[d]) > 4 for u, d in ph) >= 5  # groups chain beyond the radius
    sha = dict(zip(c["uids"], c["sha256"]))
    ex = [(u, d) for u, d, r in zip(got["uid"], got["dup_of"], got["dedup_reason"]) if r == "exact"]
    assert any(sha[u] != sha[d] for u, d in ex)  # an exact copy resolved through a pHash-removed keeper
    assert ctx.stats.extra["dedup"]["partitions"] > 3 and ctx.stats.extra["dedup"]["groups"] > 3
    assert ctx.stats.dropped["dup_exact"] == sum(r == "exact" for r in got["dedup_reason"]) > 10
    assert not os.path.exists(os.path.join(ds.url, "meta", f"v{out.version}", "_work"))


@pytest.mark.parametrize("kmeans,keep,k", [("flat", "hard", 5), ("two_level", "random", 12), ("flat", "easy", 1)])
def test_semantic_chains_equal_reference(tmp_path, kmeans, keep, k):
    ds, c = _dataset(tmp_path, n_base=80, seed=1)
    config = {"methods": ["exact", "phash", "semantic"], "phash_radius": 3, "eps": c["eps"], "n_clusters": k,
              "kmeans": kmeans, "keep": keep, "niter": 8, "sample_size": 150, "rows_per_task": 60, "block": 16}
    _, _, got = _run(ds, config)
    ref = find_duplicates_reference(ds, DedupConfig(**config))
    _assert_equal(got, ref)
    emb = dict(zip(c["uids"], c["emb"] / np.linalg.norm(c["emb"], axis=1, keepdims=True)))
    sem = [(u, d) for u, d, r in zip(got["uid"], got["dup_of"], got["dedup_reason"]) if r == "semantic"]
    assert len(sem) > 10
    assert any(float(emb[u] @ emb[d]) <= 1 - c["eps"] for u, d in sem)  # resolved along a chain


def test_decontamination_equals_reference(tmp_path):
    ds, c = _dataset(tmp_path, n_base=40, seed=2)
    ev = tmp_path / "eval.npy"
    np.save(ev, c["emb"][5:40:3] * 3.0)
    config = {"methods": ["exact", "semantic"], "eps": c["eps"], "n_clusters": 3, "eval_set": str(ev),
              "rows_per_task": 40}
    _, ctx, got = _run(ds, config)
    assert ctx.stats is not None
    ref = find_duplicates_reference(ds, DedupConfig(**config))
    _assert_equal(got, ref)
    assert sum(r == "eval_contamination" for r in got["dedup_reason"]) >= 10
    assert ctx.stats.extra["dedup"]["removed"]["eval_contamination"] == ctx.stats.dropped["dup_eval_contamination"]


def test_on_ray_equals_reference_and_resumes(tmp_path, ray_local):
    ds, c = _dataset(tmp_path, n_base=40, seed=3)
    config = {"methods": ["exact", "phash", "semantic"], "phash_radius": 4, "eps": c["eps"], "n_clusters": 4,
              "rows_per_task": 45}
    out, ctx, got = _run(ds, config, executor="ray")
    assert ctx.stats is not None
    assert ctx.stats.extra["executor"] == "ray"
    _assert_equal(got, find_duplicates_reference(ds, DedupConfig(**config)))
    again, _, got2 = _run(ds, {**config, "rows_per_task": 1000})  # an execution setting: same version
    assert again.version == out.version and got2 == got


def test_resume_reuses_the_decision_in_its_own_layout(tmp_path):
    """Killed after the decision, before any shard was written: the rerun (with another
    ``rows_per_task``, an execution setting) reuses the decision and reads it in the
    layout it was written in."""
    ds, _ = _dataset(tmp_path, n_base=30, seed=4)
    config = {"methods": ["exact", "phash"], "rows_per_task": 40}
    first = DedupStage(config)
    first.ctx = StageContext(output=ds.url, executor="local")
    plan = first.plan(ds, first.ctx)
    assert plan["job"].n_parts > 1
    out, ctx, got = _run(ds, {**config, "rows_per_task": 7})
    assert ctx.stats is not None
    assert ctx.stats.extra["dedup"] == plan["stats"]  # the same decision, not a new one
    _assert_equal(got, find_duplicates_reference(ds, DedupConfig(**config)))
    assert not os.path.exists(os.path.join(ds.url, "meta", f"v{out.version}", "_work"))


def test_the_driver_receives_counts_not_rows(tmp_path):
    """Every task result that reaches the driver is small and does not grow with the rows it
    covers: 4x the rows per task, same result sizes."""
    from curation.dedup.core import find_duplicates
    from curation.dedup.work import Work

    sizes = {}
    for scale in (1, 4):
        ds, c = _dataset(tmp_path / f"s{scale}", n_base=25 * scale, seed=5)
        biggest = 0

        def recording_map(fn, items, **kw):
            nonlocal biggest
            out = [fn(i, **kw) for i in items]
            biggest = max([biggest] + [len(pickle.dumps(o)) for o in out])
            return out

        cfg = DedupConfig.model_validate({"methods": ["exact", "phash", "semantic"], "eps": c["eps"],
                                          "n_clusters": 4, "rows_per_task": 30 * scale})
        stats = find_duplicates(ds, cfg, work=Work(str(tmp_path / f"w{scale}")), map=recording_map)
        assert stats["removed"]["exact"] > 0 and stats["groups"] >= 3
        sizes[scale] = biggest
    assert sizes[4] <= sizes[1] * 1.1 and sizes[4] < 2_000, sizes


def test_sha_partition_groups_equal_values_even_when_not_hex():
    from curation.dedup.work import sha_partition

    vals = ["ab" * 32, "zz-not-hex", "ab" * 32, "zz-not-hex", "0" * 64]
    p = sha_partition(vals, 7)
    assert p[0] == p[2] and p[1] == p[3] and ((0 <= p) & (p < 7)).all()


def _shared_band_and_flat(tmp_path, seed=6, n_walks=40):
    """pHash walks that all share band 0 (one first-level bucket of ~140 codes, split in the
    task), flat images (one code shared by many samples with different bytes), exact copies."""
    import hashlib

    rng = np.random.default_rng(seed)
    codes, shas = [], []
    for w in range(n_walks):
        c = (int(rng.integers(0, 2**51)) << 13) | 0x0AB
        for j in range(int(rng.integers(1, 7))):
            codes.append(c)
            shas.append(f"walk-{w}-{j}")
            for bit in rng.choice(np.arange(13, 64), 4, replace=False):  # band 0 never changes
                c ^= 1 << int(bit)
    for flat in (0, (1 << 64) - 1, 0x0AB):
        for j in range(12):
            codes.append(flat)
            shas.append(f"flat-{flat}-{j}")
    for i in rng.choice(len(codes), len(codes) // 5, replace=False):
        codes.append(codes[i])
        shas.append(shas[i])
    order = rng.permutation(len(codes))
    n = len(codes)
    ds = meta_only(str(tmp_path / "shared"), uids=[f"u{k:05d}" for k in range(n)],
                   sha256=[hashlib.sha256(shas[i].encode()).hexdigest() for i in order],
                   phash=[f"{codes[i]:016x}" for i in order],
                   clip_score=np.round(rng.choice([0.1, 0.2, np.nan], n), 2), per_shard=29)
    return ds, sum(c & 0x1FFF == 0x0AB for c in set(codes))


@pytest.mark.parametrize("leaf,split_cost", [(None, None), (2, 0.0)])
def test_phash_split_buckets_and_flat_images_equal_reference(tmp_path, monkeypatch, leaf, split_cost):
    """A first-level bucket far above the leaf size is split in its task (by default, and as
    deep as it goes with leaf 2 and free splits), flat images are collapsed per batch: the
    decisions still equal the reference's, chains included."""
    from curation.dedup import mih

    if leaf is not None:
        monkeypatch.setattr(mih, "LEAF", leaf)
        monkeypatch.setattr(mih, "SPLIT_COST", split_cost)
    ds, in_bucket = _shared_band_and_flat(tmp_path)
    config = {"methods": ["exact", "phash"], "phash_radius": 4, "rows_per_task": 40}
    _, ctx, got = _run(ds, config)
    assert ctx.stats is not None
    # the reference's pairs by brute force here, so it shares no search code with the stage
    monkeypatch.setattr(mih, "unique_code_pairs", lambda codes, radius, leaf=None: mih.brute_force_pairs(codes, radius))
    _assert_equal(got, find_duplicates_reference(ds, DedupConfig(**config)))
    stats = ctx.stats.extra["dedup"]
    assert in_bucket > 100 and stats["partitions"] > 3
    assert stats["phash_candidates"] < in_bucket * (in_bucket - 1) // 2 / 4  # one level: all pairs of the bucket
    code = dict(zip(got["uid"], got["phash"]))
    ph = [(u, d) for u, d, r in zip(got["uid"], got["dup_of"], got["dedup_reason"]) if r == "phash"]
    assert sum(code[u] == code[d] == "0" * 16 for u, d in ph) == 11  # a flat group: one kept
    assert sum(_hamming(code[u], code[d]) > 4 for u, d in ph) >= 5  # groups chain beyond the radius
