"""SemDeDup at size: the pairwise tiles and the distributed path's chunked work-folder I/O.

``cluster_max_earlier`` is checked against a brute-force max over earlier rows (ties to the
earliest row); the distributed SemDeDup is checked against the single-process reference with
the work files cut into many chunks and Parquet row groups, so a cluster block's rows come
from several row groups and several reads per group.
"""
from __future__ import annotations

import numpy as np
import pytest

from curation.dedup import semantic, semantic_dist
from curation.dedup.config import DedupConfig
from curation.dedup.reference import find_duplicates_reference
from curation.dedup.stage import DedupStage
from curation.stage import StageContext
from tests.dedup.corpus import chained, meta_only


def _brute(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = len(e)
    sim = (e.astype(np.float64) @ e.astype(np.float64).T)
    best = np.full(s, -np.inf)
    arg = np.full(s, -1)
    for j in range(1, s):
        arg[j] = int(np.argmax(sim[:j, j]))  # first maximum: the earliest row wins ties
        best[j] = sim[arg[j], j]
    return best, arg


@pytest.mark.parametrize("s,block", [(0, 8), (1, 8), (2, 8), (9, 3), (64, 64), (100, 7), (257, 2048), (300, 64)])
def test_cluster_max_earlier_is_the_max_over_earlier_rows(s, block):
    rng = np.random.default_rng(s * 31 + block)
    centres = rng.normal(size=(5, 12))
    x = semantic.l2_normalize((centres[rng.integers(0, 5, s)] + 0.4 * rng.normal(size=(s, 12))).astype(np.float32))
    best, arg = semantic.cluster_max_earlier(x, block)
    want_best, want_arg = _brute(x)
    assert best.dtype == np.float32 and arg.dtype == np.int64 and len(best) == len(arg) == s
    if s:
        assert best[0] == -np.inf and arg[0] == -1
    np.testing.assert_allclose(best[1:], want_best[1:], atol=1e-5)
    # the chosen row really is (within float32 rounding) the best earlier one, and is earlier
    assert (arg[1:] < np.arange(1, s)).all() and (arg[1:] >= 0).all()
    np.testing.assert_allclose((x[arg[1:]] * x[1:]).sum(1), want_best[1:], atol=1e-5)


def test_cluster_max_earlier_ties_go_to_the_earliest_row():
    rng = np.random.default_rng(3)
    x = semantic.l2_normalize(rng.normal(size=(40, 8)).astype(np.float32))
    x[[11, 17, 30]] = x[5]  # exact copies: equal cosines to every later copy
    for block in (2048, 40, 6):
        best, arg = semantic.cluster_max_earlier(x, block)
        assert arg[11] == arg[17] == arg[30] == 5, block
        assert best[11] > 0.9999


@pytest.fixture()
def small_chunks(monkeypatch):
    """Work matrices written 3 rows at a time, work tables in row groups of 5 rows."""
    monkeypatch.setattr(semantic_dist, "CHUNK_ROWS", 3)
    monkeypatch.setattr(semantic_dist, "ROW_GROUP", 5)


@pytest.mark.parametrize("kmeans,k", [("flat", 4), ("two_level", 9)])
def test_distributed_semantic_with_many_chunks_equals_reference(tmp_path, small_chunks, kmeans, k):
    c = chained(70, 11)
    has = np.ones(len(c["uids"]), bool)
    has[::19] = False
    ds = meta_only(str(tmp_path / "ds"), uids=c["uids"], sha256=c["sha256"], phash=c["phash"],
                   clip_score=c["clip_score"], has_image=has, emb=c["emb"], per_shard=23)
    config = {"methods": ["exact", "semantic"], "eps": c["eps"], "n_clusters": k, "kmeans": kmeans,
              "niter": 8, "sample_size": 120, "rows_per_task": 40, "block": 8}
    ctx = StageContext(output=ds.url, executor="local")
    out = DedupStage(config)(ds, ctx)
    got = out.read_meta(columns=["uid", "dup_of", "dedup_reason"])
    ref = find_duplicates_reference(ds, DedupConfig(**config))
    assert got.column("uid").to_pylist() == ref.uid
    assert got.column("dup_of").to_pylist() == ref.dup_of
    assert got.column("dedup_reason").to_pylist() == ref.dedup_reason
    assert sum(r == "semantic" for r in ref.dedup_reason) > 10
    assert ctx.stats is not None and ctx.stats.extra["dedup"]["groups"] > 2
