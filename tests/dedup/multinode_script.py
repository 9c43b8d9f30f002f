"""Run dedup under one Ray topology and print the result as JSON (used by test_multinode).

usage: python multinode_script.py DATASET local|cluster
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(url: str, mode: str) -> None:
    import ray

    from curation.dedup.config import DedupConfig
    from curation.dedup.core import find_duplicates
    from curation.io import Dataset
    from curation.runner.ray_utils import ensure_ray

    cluster = None
    if mode == "cluster":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 << 20})
        cluster.add_node(num_cpus=1, object_store_memory=150 << 20)
        ray.init(address=cluster.address, include_dashboard=False)
        cluster.wait_for_nodes()
    else:
        ensure_ray(num_cpus=2)
    try:
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        cfg = DedupConfig(methods=["exact", "phash", "semantic"], eps=0.02, n_clusters=4)
        r = find_duplicates(Dataset(url), cfg)
        print(json.dumps({"nodes": nodes, "dup_of": r.dup_of, "reason": r.dedup_reason, "phash": r.phash}))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
