"""The executor: run, skip completed stages on rerun, rerun changed ones and what follows."""
from __future__ import annotations

import json

from curation.io import Dataset
from curation.runner.executor import run_pipeline
from curation.runner.spec import load_pipeline
from tests.helpers import make_dataset


def _pipeline(ds_root, out, per_shard=3, where=None):
    cfg = {"samples_per_shard": per_shard}
    if where:
        cfg["where"] = where
    return load_pipeline({"name": "t", "input": ds_root, "output": out,
                          "stages": [{"stage": "reshard", "config": cfg}]})


def test_run_rerun_and_changed_config(tmp_path, ray_local):
    ds_root = str(tmp_path / "ds")
    make_dataset(ds_root, shards=2, per_shard=4)
    out = str(tmp_path / "run")
    rec = run_pipeline(_pipeline(ds_root, out))
    assert rec["stages"][0]["status"] == "done"
    stats = rec["stages"][0]["stats"]
    assert stats["samples_in"] == 10 and stats["samples_out"] == 8 and stats["dropped"] == {"not_selected": 2}
    curated = Dataset(out + "/curated")
    assert curated.num_samples == 8 and len(curated.shard_ids) == 3
    tar0 = open(out + "/curated/shards/000000.tar", "rb").read()
    # rerun: nothing recomputed, same record
    rec2 = run_pipeline(_pipeline(ds_root, out))
    assert rec2["stages"][0]["finished_at"] == rec["stages"][0]["finished_at"]
    # changed config: the stage reruns and overwrites its output
    rec3 = run_pipeline(_pipeline(ds_root, out, per_shard=5))
    assert rec3["stages"][0]["fingerprint"] != rec["stages"][0]["fingerprint"]
    assert len(Dataset(out + "/curated").shard_ids) == 2
    record = json.load(open(out + "/run.json"))
    assert record["stages"][0]["stats"]["samples_out"] == 8
    assert open(out + "/curated/shards/000000.tar", "rb").read() != tar0
