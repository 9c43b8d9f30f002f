"""The hardened client: every fault kind yields its status, and unsafe targets are never fetched."""
from __future__ import annotations

import pytest

from curation.download.config import DownloadConfig
from curation.download.fetch import Client
from curation.download.robots import opted_out
from curation.download.safety import AddressPolicy

from .server import FaultServer


@pytest.fixture(scope="module")
def server():
    with FaultServer() as s:
        yield s


def client(**kw) -> Client:
    base = dict(input="x.parquet", timeout=1.0, request_deadline=2.0, max_bytes=200_000,
                allow_private_networks=["127.0.0.1/32"])
    return Client(DownloadConfig(**{**base, **kw}))


@pytest.mark.parametrize("path,status", [
    ("/img/1.png", "success"), ("/404", "http_404"), ("/500", "http_500"), ("/slow", "timeout"),
    ("/drip", "timeout"), ("/noai", "opted_out"), ("/private/3.png", "robots_disallowed"),
    ("/redir/2", "success"), ("/redir-private", "blocked_address"), ("/redir-file", "bad_url"),
    ("/loop", "too_many_redirects"), ("/big", "too_large"), ("/big-chunked", "too_large"),
])
def test_fault_statuses(server, path, status):
    res = client().fetch(server.base_url + path)
    assert res.status == status, res.error
    assert (res.data is not None) == (status == "success")


def test_redirect_target_is_not_fetched_when_blocked(server):
    res = client().fetch(server.base_url + "/redir-private")
    assert str(res.final_url).startswith("http://127.0.0.2:")
    assert server.hits["/img/1.png"] == 0 or res.status == "blocked_address"


def test_loopback_blocked_without_opt_in(server):
    before = server.hits["/img/5.png"]
    res = client(allow_private_networks=False).fetch(server.base_url + "/img/5.png")
    assert res.status == "blocked_address"
    assert server.hits["/img/5.png"] == before  # no request reached the server


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "data:image/png;base64,AAAA",
                                 "", None, "http://", "gopher://127.0.0.1/"])
def test_non_http_urls_refused_without_io(url, tmp_path):
    res = client(allow_private_networks=True).fetch(url)
    assert res.status == "bad_url" and res.data is None


def test_robots_txt_fetched_once_per_host(server):
    c = client()
    for i in range(6):
        c.fetch(f"{server.base_url}/img/{i}.png")
    c.fetch(server.base_url + "/private/1.png")
    assert server.hits["/robots.txt"] >= 1
    n = server.hits["/robots.txt"]
    c.fetch(server.base_url + "/img/9.png")
    assert server.hits["/robots.txt"] == n


def test_robots_can_be_ignored_when_configured(server):
    assert client(respect_robots_txt=False).fetch(server.base_url + "/private/4.png").status == "success"


def test_address_policy():
    p = AddressPolicy(False)
    assert p.allowed("8.8.8.8") and not p.allowed("127.0.0.1") and not p.allowed("10.1.2.3")
    assert not p.allowed("169.254.169.254") and not p.allowed("::1") and not p.allowed("0.0.0.0")
    only = AddressPolicy(["127.0.0.1/32"])
    assert only.allowed("127.0.0.1") and not only.allowed("127.0.0.2")
    assert AddressPolicy(True).allowed("10.0.0.1")


def test_x_robots_tag_parsing():
    d = ["noai", "noimageai", "noml"]
    assert opted_out(["noml"], "curation", d) == "noml"
    assert opted_out(["otherbot: noai"], "curation", d) is None
    assert opted_out(["curation: noimageai, nofollow"], "curation", d) == "noimageai"
    assert opted_out(["nofollow"], "curation", d) is None


@pytest.mark.parametrize("ip,allowed", [
    ("2002:7f00:1::1", False), ("2002:a00:1::1", False), ("2002:808:808::1", True),     # 6to4
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),                                  # Teredo -> 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", True),                                   # Teredo -> 8.8.8.8
    ("64:ff9b::7f00:1", False), ("64:ff9b::808:808", True), ("::ffff:10.0.0.1", False),  # NAT64, mapped
])
def test_ipv6_addresses_are_judged_by_their_embedded_ipv4(ip, allowed):
    assert AddressPolicy(False).allowed(ip) is allowed


def test_key_validation_rejects_a_trailing_newline():
    from curation.errors import DatasetError
    from curation.io.format import validate_key, validate_member_name

    assert validate_key("abc_1-2") == "abc_1-2"
    for bad in ("abc\n", "abc\r\n"):
        with pytest.raises(DatasetError):
            validate_key(bad)
    with pytest.raises(DatasetError):
        validate_member_name("abc.jpg\n")
