"""URLs are normalised as browsers do (WHATWG): IDNA hosts, percent-encoded paths and queries,
raw UTF-8 redirects; what cannot be normalised is ``bad_url`` and never retried."""
from __future__ import annotations

import socket

import pytest

from curation import status as st
from curation.download.config import DownloadConfig
from curation.download.fetch import Client
from curation.download.urls import BadURL, normalize, resolve, split

from .server import RawServer, png, self_signed_tls

IMG = png()


def client(**kw) -> Client:
    base = dict(input="x.parquet", timeout=2.0, request_deadline=5.0, allow_private_networks=["127.0.0.1/32"],
                respect_robots_txt=False)
    return Client(DownloadConfig(**{**base, **kw}))


@pytest.mark.parametrize("raw,expected", [
    ("http://h/café.jpg", "http://h/caf%C3%A9.jpg"),
    ("HTTP://Bücher.Example:80/a b/x.png?q=ü#frag", "http://xn--bcher-kva.example/a%20b/x.png?q=%C3%BC"),
    ("  http://h/a\tb\n.png  ", "http://h/ab.png"),
    ("https://h:443/x", "https://h/x"),
    ("http://127.1/x", "http://127.0.0.1/x"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("http://h/%7e/%zz", "http://h/%7e/%zz"),  # existing escapes kept as they are
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["", None, "http://exa mple.com/", "http://h:99999/", "http://[::1/",
                                 "ftp://h/x", "file:///etc/passwd", "data:image/png;base64,AA", "//h/x",
                                 "http://⒈.com/", "http://0x100000000/", "http://a%20b/", "not a url"])
def test_unnormalisable_is_bad_url_and_not_retryable(raw):
    with pytest.raises(BadURL):
        normalize(raw)
    res = client().fetch(raw)
    assert res.status == st.BAD_URL and not st.is_retryable(res.status)


def test_split_and_resolve():
    assert split("http://[::1]:81/a?b") == ("http", "::1", 81, "/a?b")
    assert split("https://h") == ("https", "h", 443, "/")
    assert resolve("http://h/a/b.png", "../c.png") == "http://h/c.png"
    assert resolve("http://h/a", "/caf\xc3\xa9.jpg") == "http://h/caf%C3%A9.jpg"  # latin-1 read of UTF-8


def _image_server(paths: dict[bytes, bytes]):
    """Serves IMG at ``/caf%C3%A9.jpg``; each key of ``paths`` answers 302 with its value as the raw
    ``Location`` bytes; anything else is 404."""

    def handler(conn, stop, req):
        target = req.split(b" ")[1]
        if target in paths:
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + paths[target] + b"\r\nContent-Length: 0\r\n\r\n")
        elif target == b"/caf%C3%A9.jpg":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(IMG) + IMG)
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    return RawServer(handler)


def test_non_ascii_path_is_fetched():
    with _image_server({}) as srv:
        res = client().fetch(srv.base_url + "/café.jpg")
    assert res.status == "success" and res.data == IMG
    assert srv.requests[0].startswith(b"GET /caf%C3%A9.jpg HTTP/1.1\r\n")


def test_raw_utf8_location_header_is_followed():
    with _image_server({b"/go": "/café.jpg".encode("utf-8")}) as srv:
        res = client().fetch(srv.base_url + "/go")
    assert res.status == "success", res.error
    assert res.final_url == srv.base_url + "/caf%C3%A9.jpg"


def test_idna_host_goes_on_the_wire_as_a_label(monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, port, *a, **kw):  # the only name this test resolves
        assert host == "xn--bcher-kva.example", host
        return real("127.0.0.1", port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with _image_server({}) as srv:
        res = client().fetch(f"http://Bücher.example:{srv.port}/café.jpg")
    assert res.status == "success", res.error
    assert f"Host: xn--bcher-kva.example:{srv.port}\r\n".encode() in srv.requests[0]


@pytest.mark.parametrize("allow,status", [(False, "bad_url"), (True, "success")])
def test_https_to_http_redirect_refused_unless_allowed(tmp_path, monkeypatch, allow, status):
    pytest.importorskip("cryptography")
    from curation.download import fetch

    server_ctx, client_ctx = self_signed_tls(tmp_path)
    monkeypatch.setattr(fetch._TLSConnection, "_ctx", client_ctx)
    with _image_server({}) as plain:
        target = (plain.base_url + "/caf%C3%A9.jpg").encode()

        def handler(conn, stop, req):
            if req.split(b" ")[1] == b"/same":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(IMG) + IMG)
            else:
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\nContent-Length: 0\r\n\r\n")

        with RawServer(handler, tls_context=server_ctx) as tls:
            assert client().fetch(tls.base_url + "/same").status == "success"  # TLS itself works
            res = client(allow_https_downgrade=allow).fetch(tls.base_url + "/down")
    assert res.status == status, res.error
    if not allow:
        assert "https to http" in str(res.error) and len(plain.requests) == 0
