"""kill -9 mid-download, rerun: the committed result equals an uninterrupted run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.stage import download

from .server import FaultServer

OPTS: dict[str, Any] = dict(image_size=16, thread_count=2, samples_per_shard=4, processes_count=1, timeout=2.0,
            allow_private_networks=["127.0.0.1/32"])

DRIVER = """
import sys
from curation.download.stage import download
download(sys.argv[1], sys.argv[2], **eval(sys.argv[3]))
"""


def snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {str(p.relative_to(root)): p.read_bytes() for p in files if "/meta/" not in f"/{p.relative_to(root)}"}


@pytest.mark.chaos
@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(ray_local, tmp_path):
    with FaultServer() as srv:
        urls = [f"{srv.base_url}/slowimg/{i}" for i in range(22)] + [srv.base_url + "/404"]
        inp = tmp_path / "u.parquet"
        pq.write_table(pa.table({"url": urls, "text": [f"t{i}" for i in range(len(urls))]}), inp)
        killed, clean = tmp_path / "killed", tmp_path / "clean"
        env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(inp), str(killed), repr(OPTS)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 240
            while not (killed / "meta/v1/000000.parquet").exists():
                assert proc.poll() is None, "driver exited before the first shard committed"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not (killed / "manifest.json").exists()          # killed before the end
        resumed = download(str(inp), str(killed), **OPTS)
        whole = download(str(inp), str(clean), **OPTS)
        assert resumed.read_meta().drop(["error"]).equals(whole.read_meta().drop(["error"]))
        assert snapshot(killed) == snapshot(clean)               # identical shard tars
        assert resumed.num_samples == len(urls)
