"""Same dedup result on a 1-node local Ray and a 2-node ray.cluster_utils.Cluster.

Each topology runs in its own subprocess (Ray initialises once per process, and the session
``ray_local`` fixture must not be disturbed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .corpus import add_embeddings, build, draw, encode

SCRIPT = os.path.join(os.path.dirname(__file__), "multinode_script.py")


def _run(url: str, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, SCRIPT, url, mode], capture_output=True, text=True, timeout=400, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


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
    local = _run(ds.url, "local")
    multi = _run(ds.url, "cluster")
    assert multi["nodes"] == 2 and local["nodes"] == 1
    assert sum(r is not None for r in local["reason"]) > 8
    assert local == {**multi, "nodes": 1}
