"""--retry-failed recovers transient failures as a new metadata version, duplicating nothing."""
from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.download.stage import download
from curation.io import Dataset

from .server import FaultServer

OPTS: dict[str, Any] = dict(image_size=24, thread_count=2, timeout=1.0, request_deadline=2.0, samples_per_shard=4,
            allow_private_networks=["127.0.0.1/32"])


def test_retry_failed_recovers_transient_rows(ray_local, tmp_path):
    with FaultServer(flaky_failures=1) as srv:
        paths = ["/img/1.png", "/flaky/a", "/404", "/img/2.png", "/img/3.png", "/flaky/b", "/img/4.png"]
        inp = tmp_path / "u.parquet"
        pq.write_table(pa.table({"url": [srv.base_url + p for p in paths]}), inp)
        out = str(tmp_path / "ds")
        v1 = download(str(inp), out, **OPTS)
        s1 = v1.read_meta().to_pylist()
        assert [r["status"] for r in s1] == ["success", "http_503", "http_404", "success",
                                             "success", "http_503", "success"]
        tar_before = {s["id"]: (tmp_path / "ds" / s["tar"]).read_bytes() for s in v1.shards}

        v2 = download(str(inp), out, retry_failed=True, **OPTS)
        assert v2.version == 2 and srv.hits["/404"] == 1        # non-retryable rows not refetched
        s2 = v2.read_meta().to_pylist()
        assert [r["uid"] for r in s2] == [r["uid"] for r in s1]
        assert [r["status"] for r in s2] == ["success", "success", "http_404", "success",
                                             "success", "success", "success"]
        # committed members keep their bytes and offsets: the old version still reads
        old = Dataset(out, version=1)
        for r in s1:
            if r["status"] == "success":
                assert old.read_image(r) == v2.read_image(r)
        for sid, before in tar_before.items():
            after = (tmp_path / "ds" / v2.shard_info(sid)["tar"]).read_bytes()
            assert after[:len(before.rstrip(b"\0"))] == before.rstrip(b"\0")
        # every success readable exactly once; tars hold no duplicate keys
        got = list(v2.iter_samples())
        assert sorted(g["uid"] for g in got) == sorted(r["uid"] for r in s2 if r["status"] == "success")
        for g in got:
            assert Image.open(io.BytesIO(g["image"])).size == (24, 24)
        assert sum(s["num_images"] for s in v2.shards) == 6
        # nothing retryable left: a further retry changes nothing
        assert download(str(inp), out, retry_failed=True, **OPTS).version == 2
