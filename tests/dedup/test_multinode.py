"""Same dedup result on a 1-node local Ray, a 2-node and a 3-node ray.cluster_utils.Cluster
(one worker node removed mid-dedup), and the single-process reference.

Each topology runs in its own subprocess (Ray initialises once per process, and the session
``ray_local`` fixture must not be disturbed), on its own copy of the dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from .corpus import add_embeddings, build, chained, draw, encode, meta_only

SCRIPT = os.path.join(os.path.dirname(__file__), "multinode_script.py")


def _run(src: str, dst: str, mode: str, config: dict) -> dict:
    shutil.copytree(src, dst)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.getcwd()
    result = dst + ".json"
    p = subprocess.run([sys.executable, SCRIPT, dst, mode, json.dumps(config), result], capture_output=True,
                       text=True, timeout=500, env=env)
    assert p.returncode == 0, p.stderr[-6000:]
    with open(result) as f:
        return json.load(f)


def _same(a: dict, b: dict) -> bool:
    return (a["uid"], a["dup_of"], a["reason"], a["phash"]) == (b["uid"], b["dup_of"], b["reason"], b["phash"])


@pytest.mark.slow
def test_local_and_multinode_agree(tmp_path):
    rng = np.random.default_rng(4)
    samples = [{"uid": f"m{i:03d}", "image": encode(draw(200 + i))} for i in range(40)]
    for i in range(40, 48):  # exact and near copies across shards
        src = samples[(i * 7) % 40]
        img = src["image"] if i % 2 else encode(draw(200 + (i * 7) % 40), "JPEG", quality=70)
        samples.append({"uid": f"m{i:03d}", "image": img})
    ds = build(str(tmp_path / "ds"), samples, per_shard=6)
    centres = rng.normal(size=(6, 16))
    emb = {s["uid"]: (centres[k % 6] + 0.05 * rng.normal(size=16)).astype(np.float32)
           for k, s in enumerate(samples)}
    ds = add_embeddings(ds, emb)
    config = {"methods": ["exact", "phash", "semantic"], "eps": 0.02, "n_clusters": 4, "rows_per_task": 12}
    local = _run(ds.url, str(tmp_path / "a"), "local", config)
    multi = _run(ds.url, str(tmp_path / "b"), "cluster", config)
    assert multi["nodes"] == 2 and local["nodes"] == 1
    assert sum(r is not None for r in local["reason"]) > 8
    assert _same(local, multi)
    assert (local["dup_of"], local["reason"], local["phash"]) == tuple(local["reference"][k] for k in
                                                                       ("dup_of", "reason", "phash"))


@pytest.mark.slow
@pytest.mark.chaos
def test_worker_node_removed_mid_dedup(tmp_path):
    c = chained(150, 7)
    ds = meta_only(str(tmp_path / "ds"), uids=c["uids"], sha256=c["sha256"], phash=c["phash"],
                   clip_score=c["clip_score"], emb=c["emb"], per_shard=50)
    config = {"methods": ["exact", "phash", "semantic"], "phash_radius": 4, "eps": c["eps"], "n_clusters": 6,
              "rows_per_task": 60}
    chaos = _run(ds.url, str(tmp_path / "chaos"), "chaos", config)
    single = _run(ds.url, str(tmp_path / "single"), "local", config)
    assert chaos["nodes"] == 3 and chaos["killed"]
    assert sum(r is not None for r in single["reason"]) > 50
    assert _same(chaos, single)
    assert (chaos["dup_of"], chaos["reason"]) == (chaos["reference"]["dup_of"], chaos["reference"]["reason"])
