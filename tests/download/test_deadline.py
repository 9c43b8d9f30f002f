"""One deadline per URL that no server can outlast: dripping status lines and headers, endless
``100 Continue``, endless trailers, a stalled TLS handshake, a slow DNS answer and a slow
redirect chain are each cut off by the watchdog; header and trailer bytes count toward the cap;
a short body is ``truncated``."""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from curation.download.config import DownloadConfig
from curation.download.fetch import Budget, Client, await_fetch

from .server import RawServer, png

# The fault servers below would keep a connection busy for a minute; the client's deadline is
# DEADLINE seconds. "Cut off within the deadline" allows SLACK for a loaded 2-core test machine.
DEADLINE = 1.5
SLACK = 3.0
pytestmark = pytest.mark.timeout(60)


def client(**kw) -> Client:
    base = dict(input="x.parquet", timeout=1.0, request_deadline=DEADLINE, max_bytes=200_000,
                allow_private_networks=["127.0.0.1/32"], respect_robots_txt=False)
    return Client(DownloadConfig(**{**base, **kw}))


def drip(conn, stop, data: bytes, every: float = 0.2, seconds: float = 60.0) -> None:
    """Send ``data`` one byte at a time, well under the client's 1 s socket timeout."""
    end = time.monotonic() + seconds
    for b in data:
        if stop.is_set() or time.monotonic() > end:
            return
        conn.sendall(bytes([b]))
        time.sleep(every)


def timed_fetch(c: Client, url: str):
    t0 = time.monotonic()
    res = c.fetch(url)
    return res, time.monotonic() - t0


def test_dripping_status_line_is_cut_off():
    with RawServer(lambda conn, stop, _: drip(conn, stop, b"HTTP/1.1 200 OK\r\n" * 1000)) as srv:
        res, took = timed_fetch(client(), srv.base_url + "/a.png")
    assert res.status == "timeout" and "deadline" in str(res.error)
    assert took < DEADLINE + SLACK


def test_dripping_headers_are_cut_off():
    def handler(conn, stop, _):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        drip(conn, stop, b"X-Pad: " + b"a" * 10_000)

    with RawServer(handler) as srv:
        res, took = timed_fetch(client(), srv.base_url + "/a.png")
    assert res.status == "timeout" and took < DEADLINE + SLACK


def test_endless_100_continue_is_cut_off():
    def handler(conn, stop, _):
        while not stop.is_set():
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.05)

    with RawServer(handler) as srv:
        res, took = timed_fetch(client(), srv.base_url + "/a.png")
    assert res.status == "timeout" and took < DEADLINE + SLACK


def test_interim_response_flood_counts_toward_the_byte_cap():
    def handler(conn, stop, _):
        while not stop.is_set():
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n" * 100)

    with RawServer(handler) as srv:
        res = client(max_bytes=50_000).fetch(srv.base_url + "/a.png")
    assert res.status == "too_large" and "headers included" in str(res.error)


def _chunked_head(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n")


def test_endless_chunked_trailers_are_cut_off():
    def handler(conn, stop, _):
        _chunked_head(conn)
        while not stop.is_set():
            conn.sendall(b"X-Trailer: 1\r\n")
            time.sleep(0.05)

    with RawServer(handler) as srv:
        res, took = timed_fetch(client(), srv.base_url + "/a.png")
    assert res.status == "timeout" and took < DEADLINE + SLACK


def test_trailer_flood_counts_toward_the_byte_cap():
    def handler(conn, stop, _):
        _chunked_head(conn)
        while not stop.is_set():
            conn.sendall(b"X-Trailer: " + b"t" * 1000 + b"\r\n")

    with RawServer(handler) as srv:
        res = client(max_bytes=50_000).fetch(srv.base_url + "/a.png")
    assert res.status == "too_large"


def test_stalled_tls_handshake_is_cut_off():
    # accepts TCP, then drips garbage instead of a ServerHello
    with RawServer(lambda conn, stop, _: drip(conn, stop, b"\x16" * 1000)) as srv:
        res, took = timed_fetch(client(), f"https://127.0.0.1:{srv.port}/a.png")
    assert res.status == "timeout" and took < DEADLINE + SLACK


def test_slow_dns_is_cut_off(monkeypatch):
    release = threading.Event()
    real = socket.getaddrinfo

    def slow(host, port, *a, **kw):
        if host == "slow-dns.test":
            release.wait(30)
            host = "127.0.0.1"
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    try:
        res, took = timed_fetch(client(), "http://slow-dns.test/a.png")
    finally:
        release.set()
    assert res.status == "timeout" and "DNS" in str(res.error) and took < DEADLINE + SLACK


def test_one_deadline_across_redirect_hops():
    # every hop answers within the socket timeout, the chain as a whole does not
    def handler(conn, stop, req):
        time.sleep(0.5)
        n = int(req.split(b" ")[1].rsplit(b"/", 1)[1] or 0)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /r/%d\r\nContent-Length: 0\r\n\r\n" % (n + 1))

    with RawServer(handler) as srv:
        res, took = timed_fetch(client(max_redirects=20), srv.base_url + "/r/0")
    assert res.status == "timeout" and took < DEADLINE + SLACK
    assert 2 <= len(srv.requests) <= 6  # cut off after ~3 hops, not after 20


@pytest.mark.parametrize("body,status", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + png()[:100], "truncated"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + b"x" * 100, "truncated"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(png()) + png(), "success"),
])
def test_short_body_is_truncated(body, status):
    def handler(conn, stop, _):
        conn.sendall(body)

    with RawServer(handler) as srv:
        res = client().fetch(srv.base_url + "/a.png")
    assert res.status == status, res.error
    assert (res.data is not None) == (status == "success")


def test_last_resort_wait_gives_up_on_a_stuck_fetch():
    stuck = threading.Event()
    budget = Budget(0.2)
    with ThreadPoolExecutor(1) as pool:
        def never_returns():
            budget.start()
            stuck.wait(30)

        fut = pool.submit(never_returns)
        res = await_fetch(fut, budget, grace=0.3)
        stuck.set()
    assert res.status == "timeout" and "last-resort" in str(res.error)


def test_last_resort_wait_does_not_count_politeness_waits():
    budget = Budget(0.2)
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        def waits_for_a_slot():
            budget.start()
            with budget.paused():  # what Client does around the politeness service
                time.sleep(1.5)
            done.set()
            return "ok"

        fut = pool.submit(waits_for_a_slot)
        res = await_fetch(fut, budget, grace=0.3)
    assert res == "ok" and done.is_set()
