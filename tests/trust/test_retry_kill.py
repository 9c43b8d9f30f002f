"""``--retry-failed`` killed after every durable step: readers see the old state or the new,
never a mix, and a rerun finishes with exactly what an uninterrupted retry commits."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

from curation.io import Dataset, DatasetWriter
from tests.download.server import FaultServer
from tests.helpers import jpeg_bytes, manifest_without_timestamps

# the child counts durable writes (tar/parquet/manifest/lease/_stage.json puts and deletes)
# and dies like kill -9 (no cleanup, no atexit) right after the KILL_AFTER-th one
CHILD = r"""
import os, sys
from fsspec.implementations.local import LocalFileSystem
import curation.io.lease as lease_mod
import curation.io.writer as writer_mod
from curation.download.config import DownloadConfig
from curation.download.retry import retry_failed

kill_after = int(os.environ.get("KILL_AFTER", "0"))
count = [0]

def counted(fn):
    def wrapper(*a, **k):
        out = fn(*a, **k)
        count[0] += 1
        if count[0] == kill_after:
            os._exit(137)
        return out
    return wrapper

for mod, name in [(writer_mod, "atomic_put_file"), (writer_mod, "write_parquet"), (writer_mod, "write_manifest"),
                  (writer_mod, "create_exclusive"), (lease_mod, "create_exclusive")]:
    setattr(mod, name, counted(getattr(mod, name)))
LocalFileSystem.rm_file = counted(LocalFileSystem.rm_file)
cfg = DownloadConfig(input="unused.parquet", image_size=24, thread_count=2, timeout=2.0, request_deadline=4.0,
                     allow_private_networks=["127.0.0.1/32"])
ds = retry_failed(sys.argv[1], cfg)
print("DONE", ds.version, count[0])
"""


def _base(root: str, base_url: str) -> None:
    """3 shards: retryable failures in shards 0 and 1 (plus a 404 that stays), none in 2."""
    w = DatasetWriter(root, stage="download", config={"fixture": "retry-kill"})
    plan = {0: ["ok", "503:10", "ok", "503:11"], 1: ["503:12", "ok", "404"], 2: ["ok", "ok"]}
    for sid, kinds in plan.items():
        with w.shard(sid) as sw:
            for i, kind in enumerate(kinds):
                uid = f"s{sid}-{i}"
                if kind == "ok":
                    data = jpeg_bytes((sid * 60 + i * 20, 90, 40), size=(24, 24))
                    sw.add({"uid": uid, "url": f"{base_url}/img/{sid}{i}.png", "caption": f"c {uid}",
                            "status": "success", "sha256": hashlib.sha256(data).hexdigest(), "width": 24,
                            "height": 24, "original_width": 24, "original_height": 24}, image=data)
                elif kind == "404":
                    sw.add({"uid": uid, "url": f"{base_url}/404", "caption": "gone", "status": "http_404",
                            "error": "HTTP 404"})
                else:
                    sw.add({"uid": uid, "url": f"{base_url}/img/{kind[4:]}.png", "caption": f"c {uid}",
                            "status": "http_503", "error": "HTTP 503"})
    w.commit([0, 1, 2])


def _run(root: str, kill_after: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AFTER": str(kill_after)}
    return subprocess.run([sys.executable, "-c", CHILD, root], env=env, capture_output=True, text=True,
                          timeout=300, cwd=os.getcwd())


def _state(root: str) -> dict:
    """What a reader gets: manifest (minus timestamps), current metadata, every image's bytes."""
    ds = Dataset(root)
    m = manifest_without_timestamps(ds)
    meta = ds.read_meta().to_pylist()
    images = {r["uid"]: ds.read_image(r) for r in meta if r["tar_offset"] is not None}
    return {"manifest": m, "meta": meta, "images": images}


def _assert_readable(root: str) -> None:
    """Every listed tar exists with the listed size; every row's bytes are its tar member."""
    ds = Dataset(root)
    for s in ds.shards:
        assert os.path.getsize(os.path.join(root, s["tar"])) == s["tar_bytes"], s
    for v in ds.history_versions():
        old = Dataset(root, version=v)
        rows = [r for r in old.read_meta().to_pylist() if r["tar_offset"] is not None]
        got = {g["uid"]: g["image"] for g in ds.iter_samples(columns=None)}
        for r in rows:  # older versions stay addressable in the current tars
            assert old.read_image(r) == got.get(r["uid"], old.read_image(r))


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_retry_failed_killed_at_every_step(tmp_path):
    with FaultServer() as srv:
        base = str(tmp_path / "base")
        _base(base, srv.base_url)
        before = _state(base)
        ref = str(tmp_path / "ref")
        shutil.copytree(base, ref)
        done = _run(ref)
        assert done.returncode == 0 and "DONE 2" in done.stdout, done.stderr[-2000:]
        after = _state(ref)
        assert after["manifest"]["version"] == 2
        assert [r["status"] for r in after["meta"]].count("success") == 8
        assert {s["tar"] for s in after["manifest"]["shards"]} == {
            "shards/000000.v2.tar", "shards/000001.v2.tar", "shards/000002.tar"}
        _assert_readable(ref)
        steps = int(done.stdout.split()[-1])
        assert steps >= 9  # lease, _stage.json, 2 x (tar + meta) + meta, manifest, 2 old tars, lease release

        for k in range(1, steps + 1):
            work = str(tmp_path / f"kill{k}")
            shutil.copytree(base, work)
            killed = _run(work, kill_after=k)
            assert killed.returncode == 137, (k, killed.stdout, killed.stderr[-2000:])
            now = _state(work)
            assert now == before or now == after, f"kill after step {k}: a mix of old and new"
            _assert_readable(work)
            rerun = _run(work)
            assert rerun.returncode == 0, (k, rerun.stderr[-2000:])
            assert _state(work) == after, f"kill after step {k}: rerun differs from an uninterrupted retry"
            assert _files(work) == _files(ref), f"kill after step {k}: leftovers"
            shutil.rmtree(work)
