"""The dedup stage on a real (tiny) dataset: columns, policy, groups, decontamination, errors."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from curation.dedup.report import dedup_groups
from curation.dedup.stage import DedupStage
from curation.errors import ConfigError
from curation.stage import StageContext

from .corpus import add_embeddings, build, draw, encode


def _corpus():
    """u00..u09 originals; u10 = exact copy of u01, u11 = exact copy of u02 with a higher
    clip_score; u12/u13 = re-encoded (JPEG, resized) copies of u03; u14 failed."""
    s = [{"uid": f"u{i:02d}", "image": encode(draw(i)), "clip_score": 0.3} for i in range(10)]
    s.append({"uid": "u10", "image": s[1]["image"], "clip_score": 0.3})
    s.append({"uid": "u11", "image": s[2]["image"], "clip_score": 0.9})
    s.append({"uid": "u12", "image": encode(draw(3).resize((80, 80)), "JPEG", quality=80), "clip_score": 0.1})
    s.append({"uid": "u13", "image": encode(draw(3), "JPEG", quality=60), "clip_score": 0.2})
    s.append({"uid": "u14", "image": None})
    return s


def _tar_digests(ds):
    return {sid: hashlib.sha256(open(os.path.join(ds.url, "shards", f"{sid:06d}.tar"), "rb").read()).hexdigest()
            for sid in ds.shard_ids}


def _rows(ds):
    return {r["uid"]: r for r in ds.read_meta().to_pylist()}


def test_exact_and_phash_columns_policy_and_tars_untouched(tmp_path, ray_local):
    ds = build(str(tmp_path / "ds"), _corpus())
    before = _tar_digests(ds)
    ctx = StageContext(output=ds.url)
    out = DedupStage({"methods": ["exact", "phash"]})(ds, ctx)
    assert _tar_digests(out) == before and out.version == ds.version + 1
    rows = _rows(out)
    # exact: u01/u10 equal scores -> lowest uid kept; u02/u11 -> higher clip_score kept
    assert (rows["u10"]["dup_of"], rows["u10"]["dedup_reason"]) == ("u01", "exact")
    assert (rows["u02"]["dup_of"], rows["u02"]["dedup_reason"]) == ("u11", "exact")
    assert rows["u11"]["dup_of"] is None and rows["u01"]["dup_of"] is None
    # near: u03 kept (0.3 beats 0.2 and 0.1), both re-encodings point at it
    assert {rows[u]["dup_of"] for u in ("u12", "u13")} == {"u03"}
    assert {rows[u]["dedup_reason"] for u in ("u12", "u13")} == {"phash"}
    others = [u for u in rows if u not in ("u10", "u02", "u12", "u13")]
    assert all(rows[u]["dup_of"] is None and rows[u]["dedup_reason"] is None for u in others)
    assert rows["u14"]["phash"] is None and all(len(rows[u]["phash"]) == 16 for u in rows if u != "u14")
    assert ctx.stats is not None
    assert ctx.stats.dropped["dup_exact"] == 2 and ctx.stats.dropped["dup_phash"] == 2
    groups = {g["kept"]: g for g in dedup_groups(out)}
    assert groups["u03"]["size"] == 3 and groups["u03"]["duplicates"] == ["u12", "u13"]
    assert set(groups) == {"u01", "u11", "u03"}


def test_semantic_and_decontamination_via_embeddings(tmp_path, ray_local):
    rng = np.random.default_rng(0)
    samples = [{"uid": f"s{i:02d}", "image": encode(draw(100 + i))} for i in range(12)]
    ds = build(str(tmp_path / "ds"), samples, per_shard=4)
    base = rng.normal(size=(12, 8)).astype(np.float32)
    base[5] = base[4] + 0.01 * rng.normal(size=8)    # s05 semantic dup of s04
    base[9] = base[8] + 0.01 * rng.normal(size=8)    # s09 semantic dup of s08
    emb = {f"s{i:02d}": base[i] for i in range(12)}
    ds = add_embeddings(ds, emb)
    eval_path = tmp_path / "eval.npy"
    np.save(eval_path, np.stack([base[0] * 2.0, rng.normal(size=8)]))  # s00 is in the eval set
    out = DedupStage({"methods": ["exact", "semantic"], "eps": 0.01, "n_clusters": 2,
                      "eval_set": str(eval_path)})(ds, StageContext(output=ds.url))
    rows = _rows(out)
    assert (rows["s00"]["dedup_reason"], rows["s00"]["dup_of"]) == ("eval_contamination", None)
    pairs = {frozenset((u, rows[u]["dup_of"])) for u in rows if rows[u]["dedup_reason"] == "semantic"}
    assert pairs == {frozenset(("s04", "s05")), frozenset(("s08", "s09"))}
    flagged = {u for u in rows if rows[u]["dedup_reason"]}
    assert len(flagged) == 3
    assert out.embeddings == ds.embeddings  # embeddings stay readable after dedup


def test_semantic_without_embeddings_and_bad_config_are_clear_errors(tmp_path):
    ds = build(str(tmp_path / "ds"), _corpus()[:3])
    with pytest.raises(ConfigError, match="semantic.*needs embeddings"):
        DedupStage({"methods": ["semantic"]})(ds, StageContext(output=ds.url))
    with pytest.raises(ConfigError, match=r"dedup\.phash_radius.*-1"):
        DedupStage({"phash_radius": -1})
    with pytest.raises(ConfigError, match=r"dedup\.methods\.0.*'md5'"):
        DedupStage({"methods": ["md5"]})
    with pytest.raises(ConfigError, match=r"dedup\.eps"):
        DedupStage({"eps": 1.5})
    with pytest.raises(ConfigError, match=r"dedup\.colour: unknown key"):
        DedupStage({"colour": "red"})
    assert not os.path.exists(tmp_path / "ds" / "meta" / "v2" / "000000.parquet")


def test_cli_dedup_and_query_groups(tmp_path):
    ds = build(str(tmp_path / "ds"), _corpus())
    env = {**os.environ, "CURATION_RAY_OBJECT_STORE_BYTES": str(200 << 20)}
    r = subprocess.run([sys.executable, "-m", "curation.cli", "dedup", ds.url, "--methods", "exact"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert '"exact": 2' in r.stdout
    bad = subprocess.run([sys.executable, "-m", "curation.cli", "dedup", ds.url, "--keep", "oldest"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "dedup.keep" in bad.stderr and "oldest" in bad.stderr
