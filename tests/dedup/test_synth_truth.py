"""Dedup against the synthetic corpus's ground truth: precision and recall >= 0.95 per kind."""
from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from curation.dedup.report import evaluate
from curation.dedup.stage import DedupStage
from curation.stage import StageContext
from curation.synth import generate

from .corpus import build


def dataset_from_synth(corpus: str, out: str, per_shard: int = 50):
    """A dataset straight from the corpus files (no HTTP): one row per truth row."""
    truth = pq.read_table(os.path.join(corpus, "truth.parquet"))
    samples = []
    for r in truth.to_pylist():
        img = open(os.path.join(corpus, r["path"]), "rb").read() if r["path"] else None
        samples.append({"uid": r["uid"], "image": img})
    return build(out, samples, per_shard=per_shard), truth


@pytest.mark.slow
def test_precision_recall_on_synthetic_corpus(tmp_path, ray_local):
    corpus = str(tmp_path / "corpus")
    generate(corpus, samples=600, seed=3, seed_samples=10, eval_per_slice=5)
    ds, truth = dataset_from_synth(corpus, str(tmp_path / "ds"))
    out = DedupStage({"methods": ["exact", "phash"]})(ds, StageContext(output=ds.url))
    pr = evaluate(out, truth)
    assert pr["exact"]["truth"] > 10 and pr["near"]["truth"] > 10
    for kind in ("exact", "near"):
        assert pr[kind]["precision"] >= 0.95, pr
        assert pr[kind]["recall"] >= 0.95, pr
