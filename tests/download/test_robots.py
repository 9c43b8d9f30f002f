"""robots.txt per RFC 9309 and X-Robots-Tag opt-outs, for our token and for img2dataset."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from curation import status as st
from curation.cluster.limiter import LocalPoliteness
from curation.download.config import DownloadConfig
from curation.download.fetch import Client, limits_for
from curation.download.robots import ROBOTS_PARSE_BYTES, RobotsRules, entry_from_body, opted_out, parse_x_robots_tag

from .server import RawServer, png

IMG = png()
pytestmark = pytest.mark.timeout(120)


class Site:
    """A loopback site: ``routes[path] = (status, headers, body)``; other paths serve IMG."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.srv = RawServer(self._handle)

    def _handle(self, conn, stop, req):
        path = req.split(b" ")[1].decode()
        route = self.routes.get(path)
        if callable(route):
            return route(conn, stop)
        code, headers, body = route or (200, {}, IMG)
        head = f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        conn.sendall(head.encode("latin-1") + body)

    def hits(self, path: str) -> int:
        return sum(1 for r in self.srv.requests if r.split(b" ")[1].decode() == path)

    def __enter__(self):
        self.srv.__enter__()
        self.url = self.srv.base_url
        return self

    def __exit__(self, *exc):
        self.srv.__exit__(*exc)


def client(**kw) -> Client:
    base = dict(input="x.parquet", timeout=1.0, request_deadline=2.0, allow_private_networks=["127.0.0.1/32"])
    cfg = DownloadConfig(**{**base, **kw})
    # a fresh service per test: the robots cache lives in the service (shared by its clients)
    return Client(cfg, politeness=LocalPoliteness(limits_for(cfg)))


def robots(text: str | bytes, code: int = 200) -> dict:
    return {"/robots.txt": (code, {}, text.encode() if isinstance(text, str) else text)}


@pytest.mark.parametrize("rules,path,allowed", [
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/b/c.png", True),       # longest match wins
    ("User-agent: *\nDisallow: /a\nAllow: /a/b\n", "/a/c.png", False),
    ("User-agent: *\nAllow: /a/b\nDisallow: /a\n", "/a/b/c.png", True),       # order does not matter
    ("User-agent: *\nDisallow: /*.png$\n", "/x/y.png", False),                # * and $
    ("User-agent: *\nDisallow: /*.png$\n", "/x/y.png?s=1", True),
    ("User-agent: *\nDisallow: /p*q\n", "/p/1/q.png", False),
    ("User-agent: *\nDisallow: /\nUser-agent: curation\nAllow: /\n", "/x.png", True),   # our own group
    ("User-agent: img2dataset\nDisallow: /\n", "/x.png", False),                       # img2dataset's group
    ("User-agent: curation\nAllow: /\nUser-agent: img2dataset\nDisallow: /imgs/\n", "/imgs/1.png", False),
    ("User-agent: otherbot\nDisallow: /\n", "/x.png", True),
])
def test_rules(rules, path, allowed):
    with Site(robots(rules)) as site:
        res = client().fetch(site.url + path)
    assert (res.status == "success") == allowed, res.error
    if not allowed:
        assert res.status == st.ROBOTS_DISALLOWED


def test_served_through_redirects():
    routes = {"/robots.txt": (301, {"Location": "/r1"}, b""), "/r1": (302, {"Location": "/r2"}, b""),
              "/r2": (200, {}, b"User-agent: *\nDisallow: /private/\n")}
    with Site(routes) as site:
        c = client()
        assert c.fetch(site.url + "/private/1.png").status == st.ROBOTS_DISALLOWED
        assert c.fetch(site.url + "/public/1.png").status == "success"


def test_redirect_hop_to_a_blocked_address_disallows():
    with Site({"/robots.txt": (302, {"Location": "http://127.0.0.2/robots.txt"}, b"")}) as site:
        res = client().fetch(site.url + "/x.png")
    assert res.status == st.ROBOTS_UNREACHABLE and "blocked_address" in str(res.error)


def test_more_than_five_redirects_means_unavailable():
    routes = {"/robots.txt": (302, {"Location": "/r0"}, b"")}
    routes.update({f"/r{i}": (302, {"Location": f"/r{i + 1}"}, b"") for i in range(10)})
    with Site(routes) as site:
        res = client().fetch(site.url + "/x.png")
        assert res.status == "success"
        assert site.hits("/r5") == 0  # gave up after 5


def test_large_file_is_parsed_not_ignored():
    pad = b"# " + b"x" * 1000 + b"\n"
    body = b"User-agent: *\n" + pad * ((ROBOTS_PARSE_BYTES - 20_000) // len(pad)) + b"Disallow: /late/\n"
    body += pad * 400  # the file is ~900 KiB; the rule sits before 500 KiB
    assert len(body) > 800 * 1024 and body.index(b"Disallow") < 500 * 1024
    with Site(robots(body)) as site:
        c = client()
        assert c.fetch(site.url + "/late/1.png").status == st.ROBOTS_DISALLOWED
        assert c.fetch(site.url + "/early/1.png").status == "success"


@pytest.mark.parametrize("code,status", [(404, "success"), (403, "success"), (410, "success"),
                                         (500, st.ROBOTS_UNREACHABLE), (503, st.ROBOTS_UNREACHABLE),
                                         (429, st.ROBOTS_UNREACHABLE)])
def test_status_codes(code, status):
    with Site(robots("User-agent: *\nDisallow: /\n", code=code)) as site:
        res = client().fetch(site.url + "/x.png")
    assert res.status == status, res.error
    if status != "success":
        assert f"HTTP {code}" in str(res.error) and "disallowed" in str(res.error)
        assert st.is_retryable(res.status)


def _reset(conn, stop):
    conn.close()


def _stall(conn, stop):
    stop.wait(30)


@pytest.mark.parametrize("route,word", [(_reset, "connection_error"), (_stall, "timeout")])
def test_network_errors_and_timeouts_disallow(route, word):
    with Site({"/robots.txt": route}) as site:
        t0 = time.monotonic()
        res = client().fetch(site.url + "/x.png")
    assert res.status == st.ROBOTS_UNREACHABLE and word in res.error
    assert time.monotonic() - t0 < 30


def test_unreachable_is_cached_for_a_short_ttl_then_refetched():
    site_routes = robots("", code=503)
    with Site(site_routes) as site:
        c = client(robots_error_ttl=1.0)
        for i in range(3):
            assert c.fetch(site.url + f"/{i}.png").status == st.ROBOTS_UNREACHABLE
        assert site.hits("/robots.txt") == 1
        site_routes["/robots.txt"] = (200, {}, b"User-agent: *\nDisallow: /no/\n")
        time.sleep(1.2)
        assert c.fetch(site.url + "/yes.png").status == "success"
        assert site.hits("/robots.txt") == 2


def test_cached_per_origin_and_shared_by_clients():
    with Site(robots("User-agent: *\nDisallow: /no/\n")) as site:
        a = client()
        b = Client(a.cfg, politeness=a.politeness)  # another task talking to the same service
        for c in (a, b, a, b):
            assert c.fetch(site.url + "/no/1.png").status == st.ROBOTS_DISALLOWED
            assert c.fetch(site.url + "/1.png").status == "success"
        assert site.hits("/robots.txt") == 1


def test_entry_cut_at_a_line_boundary():
    body = b"User-agent: *\n" + b"Disallow: /a\n" * (ROBOTS_PARSE_BYTES // 13 + 100)
    e = entry_from_body(body)
    assert e.text is not None and e.text.endswith("\n") and len(e.text) <= ROBOTS_PARSE_BYTES
    assert RobotsRules(e).denial("http://h/a/1", "curation") is not None


# -- X-Robots-Tag ---------------------------------------------------------------------------
D = ["noai", "noimageai", "noindex", "noimageindex", "noml"]
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("values,expected", [
    (["noai, unavailable_after: 2030-01-01"], "noai"),         # not a user-agent scope
    (["unavailable_after: 2030-01-01"], None),
    (["unavailable_after: 2020-01-01"], "unavailable_after: 2020-01-01"),
    (["unavailable_after: Wednesday, 01-Jan-25 00:00:00 GMT"], "unavailable_after: Wednesday, 01-Jan-25 00:00:00 GMT"),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], "unavailable_after: 25 Jun 2010 15:00:00 PST"),
    (["img2dataset: noai"], "noai"),
    (["curation: noimageai, nofollow"], "noimageai"),
    (["otherbot: noai"], None),
    (["otherbot: noai", "nofollow"], None),
    (["nofollow, otherbot: noai"], None),
    (["otherbot: nofollow, img2dataset: noml"], "noml"),
    (["none"], "none"),
    (["max-image-preview: large, noimageindex"], "noimageindex"),
    (["NOAI"], "noai"),
])
def test_x_robots_tag(values, expected):
    assert opted_out(values, "curation", D, now=NOW) == expected


def test_x_robots_tag_parse_shapes():
    got = parse_x_robots_tag(["googlebot: unavailable_after: 25 Jun 2010 15:00:00 PST, noai"])
    assert [(d.scope, d.name, d.value) for d in got] == [
        ("googlebot", "unavailable_after", "25 Jun 2010 15:00:00 PST"), ("googlebot", "noai", None)]


def test_x_robots_tag_on_the_wire():
    routes = {"/a.png": (200, {"X-Robots-Tag": "noai, unavailable_after: 2030-01-01"}, IMG),
              "/b.png": (200, {"X-Robots-Tag": "img2dataset: noimageai"}, IMG),
              "/c.png": (200, {"X-Robots-Tag": "otherbot: noai"}, IMG)}
    with Site(routes) as site:
        c = client(respect_robots_txt=False)
        assert [c.fetch(site.url + p).status for p in ("/a.png", "/b.png", "/c.png")] == \
            [st.OPTED_OUT, st.OPTED_OUT, "success"]
