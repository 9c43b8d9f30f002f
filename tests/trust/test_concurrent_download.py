"""Two concurrent ``curate download`` runs on one output: one is refused, naming the holder,
and the other's result equals a solo run's (issue 17)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from curation.io import Dataset
from tests.download.server import LoopbackServer, png
from tests.helpers import manifest_without_timestamps


class GateServer(LoopbackServer):
    """Serves /img/N.png on 127.0.0.1, but holds every answer until ``gate`` is set."""

    def __init__(self):
        self.gate = threading.Event()
        self.first_hit = threading.Event()
        super().__init__()

    def handle(self, req):
        if not req.path.startswith("/img/"):
            body, code = b"no", 404
        else:
            self.first_hit.set()
            self.gate.wait(300)
            body, code = png(30 + int(req.path.rsplit("/", 1)[1].split(".")[0]), 20), 200
        self.reply(req, code, body, "image/png" if code == 200 else "text/plain")

    def close(self):
        self.gate.set()
        super().close()


def _cmd(inp: str, out: str) -> list[str]:
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    return [curate, "download", inp, "--out", out, "--allow-private-networks", "--ignore-robots-txt",
            "--samples-per-shard", "3", "--image-size", "16", "--thread-count", "2", "--timeout", "60",
            "--request-deadline", "300"]


def _result(root: str) -> dict:
    ds = Dataset(root)
    m = manifest_without_timestamps(ds)
    tars = {s["id"]: open(ds.tar_path(s["id"]), "rb").read() for s in ds.shards}
    return {"manifest": m, "meta": ds.read_meta().to_pylist(), "tars": tars}


def test_two_concurrent_downloads_on_one_output(tmp_path):
    srv = GateServer()
    try:
        inp = str(tmp_path / "urls.parquet")
        pq.write_table(pa.table({"url": [f"{srv.base_url}/img/{i}.png" for i in range(6)]}), inp)
        out = str(tmp_path / "ds")
        env = {**os.environ, "RAY_ADDRESS": ""}
        first = subprocess.Popen(_cmd(inp, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert srv.first_hit.wait(300), "the first run never started fetching"
            # the first run is now mid-download (its fetches are held): it holds the lease
            second = subprocess.run(_cmd(inp, out), capture_output=True, text=True, env=env, timeout=300)
            assert second.returncode != 0
            msg = second.stderr.strip().splitlines()[-1]
            assert "is being written by run" in msg and f"pid {first.pid}" in msg, second.stderr[-2000:]
        finally:
            srv.gate.set()
            fout, ferr = first.communicate(timeout=600)
        assert first.returncode == 0, ferr[-3000:]
        solo = str(tmp_path / "solo")
        alone = subprocess.run(_cmd(inp, solo), capture_output=True, text=True, env=env, timeout=600)
        assert alone.returncode == 0, alone.stderr[-3000:]
        got, want = _result(out), _result(solo)
        assert [r["status"] for r in got["meta"]] == ["success"] * 6
        assert got == want
        assert not os.path.exists(os.path.join(out, "_lease.json"))
    finally:
        srv.close()
