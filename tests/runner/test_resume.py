"""kill -9 of `curate run` at several points, then rerun: the result equals an uninterrupted run.

One corpus, two run folders: an uninterrupted run, and a run whose driver is SIGKILLed
during download, during scoring and while reshard writes, then rerun to completion.
Compared: manifests (apart from timestamps and timing stats), uids, every tar's bytes and
every metadata table.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curation.io import Dataset


def _spec(urls: str, out: str, ckpt: str) -> dict:
    return {"name": "resume", "input": urls, "output": out, "stages": [
        {"stage": "download", "config": {"samples_per_shard": 25, "image_size": 32, "thread_count": 2,
                                         "processes_count": 1, "per_host_rate": 40.0, "timeout": 1,
                                         "request_deadline": 2, "retries": 2,
                                         "allow_private_networks": ["127.0.0.1/32"]}},
        {"stage": "score", "config": {"model": "curation-tiny", "pretrained": ckpt, "batch_size": 16}},
        {"stage": "reshard", "config": {"samples_per_shard": 10}}]}


def _curate(spec_path: Path) -> subprocess.Popen:
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    return subprocess.Popen([curate, "run", str(spec_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _phase(out: Path) -> str:
    """Where a run is: download / score / reshard (mid-stage) or done."""
    ds = out / "dataset"
    if not (ds / "manifest.json").exists():
        return "download" if list((ds / "meta" / "v1").glob("*.parquet")) else "start"
    version = json.loads((ds / "manifest.json").read_text())["version"]
    if version == 1:
        return "score" if list(ds.glob("meta/v2/*.parquet")) else "between"
    if not (out / "curated" / "manifest.json").exists():
        return "reshard" if list((out / "curated").glob("shards/*.tar")) else "between2"
    return "done"


def _kill_during(spec_path: Path, out: Path, phase: str, timeout: float = 240) -> str:
    proc = _curate(spec_path)
    deadline = time.time() + timeout
    seen = "start"
    while time.time() < deadline and proc.poll() is None:
        seen = _phase(out)
        if seen == phase or seen == "done":
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    return seen


def _normalise(manifest: dict, run_dir: Path) -> dict:
    """Drop timestamps and timing stats; the run folder's own path is not content either."""
    m = json.loads(json.dumps(manifest).replace(str(run_dir), "<run>"))
    m.pop("created_at", None)
    for h in m["history"]:
        h.pop("created_at", None)
        h.pop("stats", None)
        if h["stage"] == "reshard":
            h.pop("config_hash")  # hashes the (path of the) source dataset
    return m


def _snapshot(root: Path) -> dict:
    ds = Dataset(str(root))
    tars = {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.tar"))}
    meta = ds.read_meta().to_pylist()
    return {"manifest": _normalise(ds.manifest, root.parent), "tars": tars, "meta": meta}


@pytest.mark.slow
@pytest.mark.chaos
def test_kill_and_resume_equals_uninterrupted(tmp_path):
    import torch

    from curation.models import load_clip, save_checkpoint
    from curation.synth import generate, write_url_list
    from curation.synth.server import SynthServer

    torch.manual_seed(0)
    ckpt = save_checkpoint(load_clip("curation-tiny").model, "curation-tiny", str(tmp_path / "ckpt"))
    corpus = tmp_path / "corpus"
    generate(str(corpus), samples=100, seed=3, seed_samples=10, eval_per_slice=5)
    with SynthServer(str(corpus), stall_seconds=3) as server:
        urls = write_url_list(str(corpus), server.base_url, str(tmp_path / "urls.parquet"))
        runs = {}
        for name in ("clean", "killed"):
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(yaml.safe_dump(_spec(urls, str(tmp_path / name), ckpt)))
            runs[name] = spec
        clean = subprocess.run([os.path.join(os.path.dirname(sys.executable), "curate"), "run",
                                str(runs["clean"])], capture_output=True, text=True, timeout=400)
        assert clean.returncode == 0, clean.stderr[-3000:]
        killed_at = [_kill_during(runs["killed"], tmp_path / "killed", phase)
                     for phase in ("download", "score", "reshard")]
        final = subprocess.run([os.path.join(os.path.dirname(sys.executable), "curate"), "run",
                                str(runs["killed"])], capture_output=True, text=True, timeout=400)
        assert final.returncode == 0, final.stderr[-3000:]
    # the kills really landed inside stages (at least download's, which is rate-limited)
    assert killed_at[0] == "download", killed_at
    for sub in ("dataset", "curated"):
        a, b = _snapshot(tmp_path / "clean" / sub), _snapshot(tmp_path / "killed" / sub)
        assert a["manifest"] == b["manifest"], sub
        assert a["tars"] == b["tars"], sub
        assert a["meta"] == b["meta"], sub
    uids = [r["uid"] for r in Dataset(str(tmp_path / "killed" / "curated")).read_meta().to_pylist()]
    assert len(uids) == len(set(uids)) > 0
