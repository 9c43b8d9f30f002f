"""Run a pipeline on a 3-node ray.cluster_utils.Cluster, killing a worker node mid-stage.

Writes <tmp>/result.json with the uids of the interrupted run and of a clean run.
Run as a subprocess (Ray can be initialised once per process).
"""
import json
import sys
import threading
import time

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
ray.init(address=cluster.address, log_to_driver=False)


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
deadline = time.time() + 60  # the GCS notices the dead node after a heartbeat timeout
while len(alive := [n for n in ray.nodes() if n["Alive"]]) > 2 and time.time() < deadline:
    time.sleep(1)
interrupted = Dataset(f"{tmp}/run1/curated").read_meta(columns=["uid"]).column("uid").to_pylist()
run_pipeline(pipeline(f"{tmp}/run2"))
clean = Dataset(f"{tmp}/run2/curated").read_meta(columns=["uid"]).column("uid").to_pylist()
open(f"{tmp}/result.json", "w").write(json.dumps({"killed": killed.is_set(), "alive_nodes": len(alive),
                                                  "interrupted": interrupted, "clean": clean}))
ray.shutdown()
cluster.shutdown()
