"""Every fault of the synthetic web, observed over real HTTP on 127.0.0.1."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import socket
import struct
import threading
import urllib.request
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from PIL import Image, UnidentifiedImageError

from curation.synth import SynthError, SynthServer, write_url_list
from curation.synth.noise import NOAI_VARIANTS, OVERSIZE_BYTES


def get(url: str, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One GET without following redirects."""
    u = urlsplit(url)
    assert u.hostname is not None, url
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", u.path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(corpus):
    root, _ = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    routes = json.loads((root / "routes.json").read_text())
    with SynthServer(root, stall_seconds=30) as server:
        def url(row):  # the corpus was written for another port: keep the path, use ours
            return server.base_url + urlsplit(row["url"]).path

        yield server, rows, routes, url


def rows_with(rows, kind):
    found = [r for r in rows if kind in r["noise"]]
    assert found, kind
    return found


def test_clean_records_serve_their_exact_bytes(served):
    server, rows, _, url = served
    clean = [r for r in rows if r["expected_status"] == "success" and len(r["noise"]) == 0][:5]
    for r in clean:
        status, headers, body = get(url(r))
        assert status == 200 and headers["content-type"].startswith("image/")
        assert hashlib.sha256(body).hexdigest() == r["sha256"]
        assert server.hits[urlsplit(r["url"]).path] >= 1


@pytest.mark.parametrize("kind, code", [("http_404", 404), ("http_500", 500)])
def test_http_errors(served, kind, code):
    _, rows, _, url = served
    for r in rows_with(rows, kind):
        assert get(url(r))[0] == code


def test_unknown_path_is_404(served):
    server = served[0]
    assert get(server.url("/img/nope.jpg"))[0] == 404


def test_not_image_bodies(served):
    _, rows, routes, url = served
    for r in rows_with(rows, "not_image"):
        status, headers, body = get(url(r))
        assert status == 200 and body.startswith(b"<!DOCTYPE html>")
        assert headers["content-type"] == routes[urlsplit(r["url"]).path]["content_type"]
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(body))


def test_noai_header(served):
    _, rows, _, url = served
    for r in rows_with(rows, "noai"):
        status, headers, body = get(url(r))
        assert status == 200 and headers["x-robots-tag"] in NOAI_VARIANTS
        assert hashlib.sha256(body).hexdigest() == r["sha256"]


def test_robots_txt_disallows_the_private_prefix(served):
    server, rows, _, url = served
    before = server.robots_fetches
    status, _, body = get(server.url("/robots.txt"))
    assert status == 200 and b"Disallow: /private/" in body
    assert server.robots_fetches == before + 1
    for r in rows_with(rows, "robots"):
        assert urlsplit(r["url"]).path.startswith("/private/")
    for r in rows:
        if "robots" not in r["noise"]:
            assert not urlsplit(r["url"]).path.startswith("/private/")


def test_redirect_chain_reaches_the_image(served):
    server, rows, routes, url = served
    for r in rows_with(rows, "redirect"):
        target, hops = url(r), 0
        while True:
            status, headers, body = get(target)
            if status not in (301, 302, 307, 308):
                break
            target = headers["location"]
            assert target.startswith(server.base_url + "/")
            hops += 1
        assert status == 200 and hops == routes[urlsplit(r["url"]).path]["hops"]
        assert hashlib.sha256(body).hexdigest() == r["sha256"]
        with urllib.request.urlopen(url(r), timeout=10) as resp:  # a real client follows it too
            assert hashlib.sha256(resp.read()).hexdigest() == r["sha256"]


def test_blocked_redirect_points_at_another_loopback_address(served):
    server, rows, _, url = served
    for r in rows_with(rows, "blocked_redirect"):
        status, headers, _ = get(url(r))
        loc = urlsplit(headers["location"])
        assert status == 302 and loc.hostname == "127.0.0.2" and loc.port == server.port


def test_oversized_bodies(served):
    _, rows, routes, url = served
    for r in rows_with(rows, "oversized"):
        status, headers, body = get(url(r))
        assert status == 200 and len(body) >= OVERSIZE_BYTES
        assert ("content-length" in headers) == routes[urlsplit(r["url"]).path]["content_length"]
        assert Image.open(io.BytesIO(body)).size == (r["width"], r["height"])  # a real image, padded


def test_decompression_bomb(served):
    _, rows, _, url = served
    for r in rows_with(rows, "too_many_pixels"):
        status, headers, body = get(url(r))
        assert status == 200 and headers["content-type"] == "image/png" and len(body) < 200_000
        width, height = struct.unpack(">II", body[16:24])  # IHDR: the declared size
        assert width * height >= 100_000_000
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(body))


def test_transient_failures_clear_after_retries(corpus):
    root, _ = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    routes = json.loads((root / "routes.json").read_text())
    r = rows_with(rows, "transient")[0]
    path = urlsplit(r["url"]).path
    for _ in range(2):  # counted per server instance: a fresh server fails again
        with SynthServer(root) as server:
            codes = [get(server.url(path))[0] for _ in range(4)]
            fails = routes[path]["fail_times"]
            assert codes == [503] * fails + [200] * (4 - fails)
            assert server.hits[path] == 4 and server.statuses[503] == fails


def test_timeouts_stall_past_the_client_and_end_on_close(corpus):
    root, _ = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    routes = json.loads((root / "routes.json").read_text())
    server = SynthServer(root, stall_seconds=120).start()
    try:
        for r in rows_with(rows, "timeout"):
            path = urlsplit(r["url"]).path
            # stalls before the headers or mid-body (after half the bytes): both time out
            assert routes[path]["stall"] in ("headers", "body")
            with pytest.raises((socket.timeout, TimeoutError)):
                get(server.url(path), timeout=0.5)
            assert server.hits[path] == 1
    finally:
        closer = threading.Thread(target=server.close)
        closer.start()
        closer.join(timeout=20)
    assert not closer.is_alive()  # the stalled handlers did not keep the server open


def test_refuses_non_loopback_and_non_corpus(tmp_path, corpus):
    with pytest.raises(SynthError, match="loopback"):
        SynthServer(corpus[0], host="0.0.0.0")
    with pytest.raises(SynthError, match="routes.json"):
        SynthServer(tmp_path)


def test_write_url_list(tmp_path, corpus):
    root, _ = corpus
    copy = tmp_path / "corpus"
    shutil.copytree(root, copy)
    with SynthServer(copy) as server:
        other = write_url_list(copy, "http://127.0.0.1:1", out_path=str(tmp_path / "urls.parquet"))
        assert pq.read_table(other)["url"][0].as_py().startswith("http://127.0.0.1:1/img/")
        assert (copy / "urls.parquet").read_bytes() == (root / "urls.parquet").read_bytes()
        write_url_list(copy, server.base_url)
        urls = pq.read_table(copy / "urls.parquet").to_pylist()
        truth = pq.read_table(copy / "truth.parquet").to_pylist()
        assert [u["url"] for u in urls] == [t["url"] for t in truth]
        assert all(u["url"].startswith(server.base_url + "/") for u in urls)
        assert json.loads((copy / "corpus.json").read_text())["base_url"] == server.base_url
        ok = next(t for t in truth if not t["noise"])
        with urllib.request.urlopen(ok["url"], timeout=10) as resp:
            assert hashlib.sha256(resp.read()).hexdigest() == ok["sha256"]
    with pytest.raises(SynthError, match="base_url"):
        write_url_list(copy, "file:///etc")


def test_routes_cannot_escape_the_corpus(tmp_path, corpus):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus[0], copy)
    routes = json.loads((copy / "routes.json").read_text())
    first = next(iter(routes))
    routes[first]["file"] = "../../etc/passwd"
    (copy / "routes.json").write_text(json.dumps(routes))
    with pytest.raises(SynthError, match="outside file"):
        SynthServer(copy)
