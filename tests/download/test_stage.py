"""The download stage end to end on local Ray against the loopback fault server."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.inputs import InputError
from curation.download.stage import download
from curation.errors import ConfigError

from .server import FaultServer

EXPECT = {"/img/1.png": "success", "/img/2.png": "success", "/404": "http_404", "/500": "http_500",
          "/text": "not_image", "/noai": "opted_out", "/private/3.png": "robots_disallowed",
          "/redir/4": "success", "/redir-private": "blocked_address", "/big": "too_large",
          "/bomb": "too_many_pixels", "/img/5.png": "success", "/drip": "timeout"}
OPTS: dict[str, Any] = dict(image_size=32, thread_count=4, timeout=1.0, request_deadline=1.5, max_bytes=200_000,
                            max_pixels=10_000_000, allow_private_networks=["127.0.0.1/32"], samples_per_shard=5)


@pytest.fixture(scope="module")
def server():
    with FaultServer() as s:
        yield s


def url_list(tmp_path, base, extra=()):
    urls = [base + p for p in EXPECT] + ["file:///etc/passwd", "ftp://127.0.0.1/a.png", *extra]
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": urls, "text": [f"caption {i}" for i in range(len(urls))]}), path)
    return str(path), urls


def test_every_record_gets_one_row_with_its_status(ray_local, server, tmp_path):
    inp, urls = url_list(tmp_path, server.base_url)
    ds = download(inp, str(tmp_path / "ds"), **OPTS)
    rows = ds.read_meta().to_pylist()
    assert [r["url"] for r in rows] == urls                      # one row per record, input order
    assert len({r["uid"] for r in rows}) == len(rows)
    got = {r["url"][len(server.base_url):]: r["status"] for r in rows if r["url"].startswith(server.base_url)}
    assert got == EXPECT
    assert [r["status"] for r in rows[-2:]] == ["bad_url", "bad_url"]
    ok = [r for r in rows if r["status"] == "success"]
    assert len(ok) == sum(1 for v in EXPECT.values() if v == "success")
    assert sum(s["num_images"] for s in ds.shards) == len(ok)
    import io

    from PIL import Image
    for r in ok:
        im = Image.open(io.BytesIO(ds.read_image(r)))
        assert im.size == (32, 32) and (r["width"], r["height"]) == (32, 32)
        assert r["original_width"] > 30 and len(r["sha256"]) == 64 and r["original_size"] > 0
    assert all(r["error"] for r in rows if r["status"] != "success")
    assert ds.manifest["history"][0]["stats"]["status"]["success"] == len(ok)
    # rerun: complete output is returned as is, bytes unchanged
    before = {s["id"]: (tmp_path / "ds" / s["tar"]).read_bytes() for s in ds.shards}
    ds2 = download(inp, str(tmp_path / "ds"), **OPTS)
    assert {s["id"]: (tmp_path / "ds" / s["tar"]).read_bytes() for s in ds2.shards} == before


def test_changed_input_is_refused(ray_local, server, tmp_path):
    inp, _ = url_list(tmp_path, server.base_url)
    download(inp, str(tmp_path / "ds"), **{**OPTS, "samples_per_shard": 100})
    pq.write_table(pa.table({"url": [server.base_url + "/img/9.png"]}), inp)
    with pytest.raises(InputError, match="input changed"):
        download(inp, str(tmp_path / "ds"), **{**OPTS, "samples_per_shard": 100})


def test_bad_config_names_key(tmp_path):
    with pytest.raises(ConfigError, match="image_size"):
        download("x.parquet", str(tmp_path / "o"), image_size=-1)
    with pytest.raises(ConfigError, match="allow_private_networks"):
        download("x.parquet", str(tmp_path / "o"), allow_private_networks=["not-a-net"])


def test_webdataset_reingest(ray_local, tmp_path):
    import io as _io

    import webdataset as wds
    from PIL import Image

    from .server import png
    for t in range(2):
        with wds.TarWriter(str(tmp_path / f"in-{t}.tar")) as tw:
            for i in range(3):
                sample = {"__key__": f"s{t}{i}", "txt": f"cap {t}{i}", "json": {"url": f"http://x/{t}{i}"}}
                if i != 2:
                    sample["png"] = png(20 + i, 20)
                else:
                    sample["pyd"] = b"\x80\x04K\x01."  # a pickle: must never be decoded
                tw.write(sample)
    ds = download(str(tmp_path / "in-{0..1}.tar"), str(tmp_path / "ds"), image_size=16, samples_per_shard=10)
    rows = ds.read_meta().to_pylist()
    assert len(ds.shard_ids) == 2 and len(rows) == 6
    assert [r["status"] for r in rows] == ["success", "success", "not_image"] * 2
    assert [r["caption"] for r in rows][:2] == ["cap 00", "cap 01"] and rows[0]["url"] == "http://x/00"
    assert rows[1]["original_width"] == 21
    assert Image.open(_io.BytesIO(ds.read_image(rows[0]))).size == (16, 16)
