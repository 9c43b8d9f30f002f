"""Score -> filter -> reshard under one Ray topology; print what they wrote as JSON (for test_multinode).

usage: python -m tests.scale.multinode_script DATASET CHECKPOINT local|chaos RESULT_JSON

* ``local``: one embedded local Ray of 2 CPUs.
* ``chaos``: a ``ray.cluster_utils.Cluster``: a head without CPUs and a 1-CPU worker node, so
  the score stage's one actor must run on that worker. When the first shard commits, a second
  worker node joins (3 nodes) and the first one is removed ungracefully, mid-score: the actor,
  and the shard it was scoring, must be restarted on the new node.

Every stage runs its Ray path (``executor: ray``) in both modes, so the outputs must be equal.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(url: str, checkpoint: str, mode: str, result: str) -> None:
    import ray

    from curation.cluster import ensure_ray
    from curation.filters.stage import FilterStage
    from curation.io import Dataset
    from curation.reshard.stage import ReshardStage
    from curation.score.stage import ScoreStage
    from curation.stage import StageContext

    cluster, killed, lock = None, threading.Event(), threading.Lock()
    if mode == "chaos":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                "object_store_memory": 150 << 20})
        first = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=150 << 20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    else:
        ensure_ray(num_cpus=2)

    def progress(done: int, total: int, samples: int) -> None:
        with lock:
            if mode != "chaos" or done != 1 or killed.is_set() or cluster is None:
                return
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=150 << 20)
            cluster.remove_node(first, allow_graceful=False)
            killed.set()

    try:
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        ds = Dataset(url)
        scored = ScoreStage({"model": "curation-tiny", "pretrained": checkpoint, "device": "cpu", "executor": "ray",
                             "actors": 1, "batch_size": 4})(ds, StageContext(output=url, progress=progress))
        filtered = FilterStage({"clip_top_fraction": 0.5})(scored, StageContext(output=url, executor="ray"))
        out = os.path.join(os.path.dirname(url), f"curated_{mode}")
        curated = ReshardStage({"samples_per_shard": 5, "output": out})(filtered, StageContext(output=out,
                                                                                              executor="ray"))
        meta = scored.read_meta(columns=["uid", "clip_score", "score_error"])
        emb = scored.read_embeddings()
        tars = {s: hashlib.sha256(open(curated.tar_path(s), "rb").read()).hexdigest() for s in curated.shard_ids}
        res = json.dumps({
            "nodes": nodes, "killed": killed.is_set(), "alive_after": sum(1 for n in ray.nodes() if n["Alive"]),
            "uid": meta.column("uid").to_pylist(), "clip_score": meta.column("clip_score").to_pylist(),
            "score_error": meta.column("score_error").to_pylist(), "emb_uid": emb.column("uid").to_pylist(),
            "image_emb": emb.column("image_emb").to_pylist(),
            "keep": filtered.read_meta(columns=["keep"]).column("keep").to_pylist(),
            "threshold": filtered.manifest["history"][-1]["stats"]["filter"]["top_fraction_threshold"],
            "curated_uid": curated.read_meta(columns=["uid"]).column("uid").to_pylist(), "tars": tars})
        with open(result, "w") as f:  # not stdout: Ray's own processes print there too
            f.write(res)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
