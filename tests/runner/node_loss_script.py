"""Run a pipeline on a 3-node ray.cluster_utils.Cluster, killing a worker node mid-stage.

Prints a JSON line with the uids of the interrupted run and of a clean run.
Run as a subprocess (Ray can be initialised once per process).
"""
import json
import sys
import threading

import ray
from ray.cluster_utils import Cluster

from curation.io import Dataset
from curation.runner.executor import run_pipeline
from curation.runner.spec import load_pipeline
from tests.helpers import make_dataset

tmp = sys.argv[1]
make_dataset(f"{tmp}/ds", shards=6, per_shard=8)
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address)


def pipeline(out):
    return load_pipeline({"name": "nodeloss", "input": f"{tmp}/ds", "output": out,
                          "stages": [{"stage": "reshard", "config": {"samples_per_shard": 3}}]})


killed = threading.Event()


def progress(stage):
    def update(done, total, samples):
        if done == 1 and not killed.is_set():
            killed.set()
            cluster.remove_node(workers[0], allow_graceful=False)  # a node dies mid-stage
    return update


rec = run_pipeline(pipeline(f"{tmp}/run1"), progress=progress)
alive = [n for n in ray.nodes() if n["Alive"]]
interrupted = Dataset(f"{tmp}/run1/curated").read_meta(columns=["uid"]).column("uid").to_pylist()
run_pipeline(pipeline(f"{tmp}/run2"))
clean = Dataset(f"{tmp}/run2/curated").read_meta(columns=["uid"]).column("uid").to_pylist()
print(json.dumps({"killed": killed.is_set(), "alive_nodes": len(alive), "interrupted": interrupted,
                  "clean": clean}))
ray.shutdown()
cluster.shutdown()
