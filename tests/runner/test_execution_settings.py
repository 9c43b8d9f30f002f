"""Execution settings (workers, threads, politeness, batch sizes) never make the runner redo work.

A finished pipeline rerun with a new ``download.processes_count`` refetches nothing: the
served corpus gets zero new requests and the tars are the same files; only the run record
takes the new settings. A stopped download resumed with new settings fetches only the shard
that was missing. A semantic change, by contrast, still recomputes.
"""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io import Dataset
from curation.runner.executor import run_pipeline
from curation.runner.spec import load_pipeline
from tests.download.server import FaultServer


@pytest.fixture(scope="module")
def server():
    with FaultServer() as s:
        yield s


def _spec(urls: str, out: str) -> dict:
    return {"name": "exec", "input": urls, "output": out, "stages": [
        {"stage": "download", "config": {"samples_per_shard": 3, "image_size": 16, "thread_count": 2,
                                         "processes_count": 1, "respect_robots_txt": False,
                                         "allow_private_networks": ["127.0.0.1/32"]}},
        {"stage": "filter", "config": {"where": "width >= 16"}},
        {"stage": "reshard", "config": {"samples_per_shard": 4}}]}


def _files(root: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every tar and metadata file under ``root``."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith((".tar", ".parquet")):
                st = os.stat(os.path.join(d, n))
                out[os.path.relpath(os.path.join(d, n), root)] = (st.st_ino, st.st_mtime_ns)
    return out


def test_new_execution_settings_refetch_nothing(server, tmp_path, ray_local):
    urls = str(tmp_path / "urls.parquet")
    paths = [f"/img/{i}.png" for i in range(6)]
    pq.write_table(pa.table({"url": [server.base_url + p for p in paths]}), urls)
    out = str(tmp_path / "run")
    rec = run_pipeline(load_pipeline(_spec(urls, out)))
    assert [s["status"] for s in rec["stages"]] == ["done"] * 3
    hits = {p: server.hits[p] for p in paths}
    assert set(hits.values()) == {1}
    files = _files(out)
    versions = [(s["dataset"], s["version"]) for s in rec["stages"]]

    faster = ["stages.0.config.processes_count=2", "stages.0.config.thread_count=5",
              "stages.0.config.per_host_concurrency=3"]
    rec2 = run_pipeline(load_pipeline(_spec(urls, out), faster))
    assert {p: server.hits[p] for p in paths} == hits                 # zero new requests
    assert _files(out) == files                                        # same files, not rewritten
    assert [(s["dataset"], s["version"]) for s in rec2["stages"]] == versions
    assert [s["fingerprint"] for s in rec2["stages"]] == [s["fingerprint"] for s in rec["stages"]]
    assert [s["finished_at"] for s in rec2["stages"]] == [s["finished_at"] for s in rec["stages"]]
    saved = json.load(open(os.path.join(out, "run.json")))
    assert saved["stages"][0]["config"]["processes_count"] == 2      # the record took the new settings
    assert saved["stages"][0]["config"]["thread_count"] == 5

    # a download stopped after one shard, resumed with yet other settings: only the rest is fetched
    ds_root = os.path.join(out, "dataset")
    os.remove(os.path.join(ds_root, "manifest.json"))
    for rel in ("shards/000001.tar", "meta/v1/000001.parquet"):
        os.remove(os.path.join(ds_root, rel))
    for name in os.listdir(os.path.join(ds_root, "meta")):
        if name != "v1":
            import shutil

            shutil.rmtree(os.path.join(ds_root, "meta", name))
    saved["stages"] = [{**saved["stages"][0], "status": "running"}]
    json.dump(saved, open(os.path.join(out, "run.json"), "w"))
    rec3 = run_pipeline(load_pipeline(_spec(urls, out), ["stages.0.config.processes_count=3"]))
    assert [s["status"] for s in rec3["stages"]] == ["done"] * 3
    assert {p: server.hits[p] for p in paths} == {**hits, **{p: 2 for p in paths[3:]}}   # shard 1 only
    assert _files(ds_root)["shards/000000.tar"] == files["dataset/shards/000000.tar"]
    assert Dataset(ds_root, version=1).num_samples == 6

    # a semantic change (what the stage computes) still recomputes
    rec4 = run_pipeline(load_pipeline(_spec(urls, out), ["stages.0.config.image_size=24"]))
    assert rec4["stages"][0]["fingerprint"] != rec["stages"][0]["fingerprint"]
    assert {p: server.hits[p] for p in paths[:3]} == {p: 2 for p in paths[:3]}
    assert Dataset(ds_root, version=1).read_meta().column("width").to_pylist() == [24] * 6
