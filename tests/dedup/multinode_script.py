"""Run the dedup stage under one Ray topology and print the result as JSON (used by test_multinode).

usage: python multinode_script.py DATASET local|cluster|chaos CONFIG_JSON RESULT_JSON

``chaos``: a 3-node ``ray.cluster_utils.Cluster`` (head without CPUs, two 1-CPU workers);
a worker node is removed, ungracefully, as soon as the dedup's pHash band partitions
appear (mid-dedup). The result (a file: Ray may print to stdout while nodes go away) also
carries the single-process reference result.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _watch_and_kill(cluster, node, path: str, killed: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        if os.path.exists(path) and os.listdir(path):
            cluster.remove_node(node, allow_graceful=False)
            killed.set()
            return
        time.sleep(0.02)


def main(url: str, mode: str, config: dict, result: str) -> None:
    import ray

    from curation.cluster import ensure_ray
    from curation.dedup.config import DedupConfig
    from curation.dedup.reference import find_duplicates_reference
    from curation.dedup.stage import DedupStage
    from curation.io import Dataset
    from curation.stage import StageContext

    cluster = None
    killed, stop = threading.Event(), threading.Event()
    if mode in ("cluster", "chaos"):
        from ray.cluster_utils import Cluster

        head_cpus = 0 if mode == "chaos" else 1
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "node_ip_address": "127.0.0.1",
                                                                "object_store_memory": 150 << 20})
        workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=150 << 20)
                   for _ in range(2 if mode == "chaos" else 1)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    else:
        ensure_ray(num_cpus=2)
    try:
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        ds = Dataset(url)
        watcher = None
        if mode == "chaos":
            work = os.path.join(url, "meta", f"v{ds.version + 1}", "_work", "pb")
            watcher = threading.Thread(target=_watch_and_kill, args=(cluster, workers[0], work, killed, stop),
                                       daemon=True)
            watcher.start()
        out = DedupStage(config)(ds, StageContext(output=url, executor="ray"))
        stop.set()
        t = out.read_meta(columns=["uid", "dup_of", "dedup_reason", "phash"])
        ref = find_duplicates_reference(Dataset(url, version=ds.version), DedupConfig(**config))
        text = json.dumps({"nodes": nodes, "killed": killed.is_set(), "uid": t.column("uid").to_pylist(),
                          "dup_of": t.column("dup_of").to_pylist(), "reason": t.column("dedup_reason").to_pylist(),
                          "phash": t.column("phash").to_pylist(),
                           "reference": {"dup_of": ref.dup_of, "reason": ref.dedup_reason, "phash": ref.phash}})
        with open(result, "w") as f:
            f.write(text)
    finally:
        stop.set()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
