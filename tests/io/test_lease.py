"""One writer per output: the writer lease (issue 17, DESIGN.md 5.7)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from curation.io import DatasetWriter
from curation.io.fs import PreconditionFailed, clean_temps, create_exclusive, local_temp_file
from curation.io.lease import LEASE, LeaseError, read_holder
from curation.io.writer import VersionWriter
from tests.helpers import jpeg_bytes, make_dataset


def _foreign_lease(root, *, heartbeat: float, run_id="other-run", host="elsewhere.example", pid=4242):
    """A lease record of another run written straight to disk (no clock in the test: the
    heartbeat is a fixed point far in the past or the present)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, LEASE), "w") as f:
        json.dump({"run_id": run_id, "host": host, "pid": pid, "heartbeat": heartbeat, "ttl": 120}, f)


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    root = str(tmp_path / "ds")
    _foreign_lease(root, heartbeat=time.time())
    with pytest.raises(LeaseError) as e:
        DatasetWriter(root, stage="download")
    msg = str(e.value)
    assert "\n" not in msg and "other-run" in msg and "elsewhere.example" in msg and "4242" in msg
    # --break-lease does not help while the heartbeat is fresh
    with pytest.raises(LeaseError, match="wait for it to finish"):
        DatasetWriter(root, stage="download", break_lease=True)
    holder = read_holder(DatasetWriter.attach(root).fs, root)
    assert holder is not None and holder["run_id"] == "other-run"
    assert sorted(os.listdir(root)) == [LEASE]  # the refused writer wrote nothing


def test_stale_lease_needs_break_lease(tmp_path):
    root = str(tmp_path / "ds")
    _foreign_lease(root, heartbeat=1_000_000.0)  # 1970: stale for any ttl
    with pytest.raises(LeaseError, match="--break-lease"):
        DatasetWriter(root, stage="download")
    w = DatasetWriter(root, stage="download", break_lease=True, run_id="mine")
    holder = read_holder(w.fs, root)
    assert holder is not None and holder["run_id"] == "mine"
    with w.shard(0) as sw:
        sw.add({"uid": "a", "status": "success"}, image=jpeg_bytes())
    ds = w.commit([0])
    assert ds.num_samples == 1 and not os.path.exists(os.path.join(root, LEASE))  # released


def test_dead_holder_on_this_host_is_taken_over(tmp_path):
    """kill -9 then rerun: the lease of a pid that no longer exists is not in the way."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    root = str(tmp_path / "ds")
    _foreign_lease(root, heartbeat=time.time(), host=socket.gethostname(), pid=p.pid)
    w = DatasetWriter(root, stage="download")
    holder = read_holder(w.fs, root)
    assert holder is not None and holder["pid"] == os.getpid()


def test_attached_task_of_a_run_that_lost_the_lease_is_refused(tmp_path):
    root = str(tmp_path / "ds")
    w = DatasetWriter(root, stage="download", run_id="run-a")
    task = DatasetWriter.attach(root, run_id="run-a")
    with task.shard(0) as sw:
        sw.add({"uid": "a", "status": "success"}, image=jpeg_bytes())
    # run-a's driver is gone (say, a partitioned node) and run-b broke its lease
    assert w._lease is not None
    w._lease.lease._stop.set()
    _foreign_lease(root, heartbeat=time.time(), run_id="run-b")
    with pytest.raises(LeaseError, match="run-b"):
        with task.shard(1) as sw:
            sw.add({"uid": "b", "status": "success"}, image=jpeg_bytes())
    assert not os.path.exists(os.path.join(root, "shards", "000001.tar"))
    assert not os.path.exists(os.path.join(root, "meta", "v1", "000001.parquet"))
    with pytest.raises(LeaseError, match="lost its writer lease"):
        w.commit([0])
    assert not os.path.exists(os.path.join(root, "manifest.json"))


def test_attach_without_run_id_writes_under_the_holders_id(tmp_path):
    root = str(tmp_path / "ds")
    w = DatasetWriter(root, stage="download", run_id="holder-1")
    assert DatasetWriter.attach(root).run_id == "holder-1"
    w.release()


def test_version_writers_never_share_a_number(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    a = VersionWriter(ds, "score", {"a": 1})
    b = VersionWriter(ds, "score", {"a": 2})  # same run (re-entrant lease), different config
    assert a.version != b.version
    # a number taken by someone else's _stage.json is skipped even if nothing else shows it
    os.makedirs(os.path.join(ds.root, "meta", f"v{b.version + 1}"))
    create_exclusive(ds.fs, os.path.join(ds.root, "meta", f"v{b.version + 2}", "_stage.json"), b"{}")
    c = VersionWriter(ds, "score", {"a": 3})
    assert c.version == b.version + 3
    with pytest.raises(PreconditionFailed):
        create_exclusive(ds.fs, os.path.join(ds.root, "meta", f"v{c.version}", "_stage.json"), b"{}")


def test_version_writer_refused_while_another_run_writes(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    _foreign_lease(ds.root, heartbeat=time.time())
    with pytest.raises(LeaseError, match="other-run"):
        VersionWriter(ds, "score", {})
    assert sorted(os.listdir(os.path.join(ds.root, "meta"))) == ["v1"]


def test_cleanup_removes_only_own_and_stale_temps(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    from fsspec.implementations.local import LocalFileSystem

    fs = LocalFileSystem()
    paths = {}
    for tag in ("mine", "live-other", "dead-other"):
        fd, p = local_temp_file(fs, str(d / "000000.tar"), ".tar", tag)
        os.close(fd)
        paths[tag] = p
    os.utime(paths["dead-other"], (1_000_000, 1_000_000))  # untouched since 1970: stale
    assert clean_temps(fs, str(d), run_id="mine", stale_after=120) == 2
    assert [os.path.exists(paths[t]) for t in ("mine", "live-other", "dead-other")] == [False, True, False]


def test_s3_lease_uses_conditional_put(s3_server):
    """SeaweedFS honours If-None-Match: * (exclusive create) and If-Match (heartbeat CAS)."""
    url = s3_server.url("lease/ds")
    fs = s3_server.filesystem()
    key = f"{s3_server.bucket}/lease/probe.json"
    create_exclusive(fs, key, b"one")
    with pytest.raises(PreconditionFailed):
        create_exclusive(fs, key, b"two")
    assert fs.cat(key) == b"one"
    w = DatasetWriter(url, stage="download", storage_options=s3_server.storage_options, run_id="s3-run")
    with pytest.raises(LeaseError, match="s3-run"):
        DatasetWriter(url, stage="download", storage_options=s3_server.storage_options, run_id="other")
    assert w._lease is not None
    w._lease.lease.refresh()  # a heartbeat: compare-and-swap against the ETag it holds
    assert w._lease.lease.lost is None
    with w.shard(0) as sw:
        sw.add({"uid": "a", "status": "success"}, image=jpeg_bytes())
    ds = w.commit([0])
    assert ds.num_samples == 1 and not fs.exists(f"{s3_server.bucket}/lease/ds/{LEASE}")


def test_heartbeat_renews_and_notices_a_takeover(tmp_path):
    root = str(tmp_path / "ds")
    w = DatasetWriter(root, stage="download", run_id="beat")
    assert w._lease is not None
    lease = w._lease.lease
    path = os.path.join(root, LEASE)
    rec = json.load(open(path))
    rec["heartbeat"] = 1_000_000.0  # as if the last beat were long ago
    json.dump(rec, open(path, "w"))
    lease.refresh()
    assert json.load(open(path))["heartbeat"] > 1_000_000.0 and lease.lost is None
    _foreign_lease(root, heartbeat=time.time(), run_id="usurper")
    lease.refresh()
    assert lease.lost is not None and "usurper" in lease.lost
    assert json.load(open(path))["run_id"] == "usurper"  # a lost lease is never written over
    with pytest.raises(LeaseError, match="usurper"):
        w.check_lease()
