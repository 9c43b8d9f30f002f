"""``SynthServer``: serve a synthetic corpus over HTTP on loopback, with the faults of the web.

Every URL of ``urls.parquet`` answers as ``routes.json`` says: the image, a 404/500, a stall
past any client timeout (before the headers or mid-body), an HTML page, ``X-Robots-Tag``
opt-outs, a redirect chain to the real image or to a blocked address, an oversized body, a
decompression bomb, or a transient 503 that clears after 1-2 tries (counted per server
instance). ``/robots.txt`` disallows ``/private/``. Counters let tests check what a client did.
"""
from __future__ import annotations

import ipaddress
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from curation.synth.corpus import SynthError
from curation.synth.noise import ROBOTS_PREFIX

ROBOTS_TXT = f"User-agent: *\nDisallow: {ROBOTS_PREFIX}\n".encode()
BLOCKED_HOST = "127.0.0.2"  # loopback, but not the server's address: a safe client refuses it
_CHUNK = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "curation-synth/1"
    protocol_version = "HTTP/1.0"  # one request per connection; close-delimited bodies allowed

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature; keep tests quiet
        pass

    @property
    def synth(self) -> "SynthServer":
        return self.server.synth  # type: ignore[attr-defined]

    def do_HEAD(self):  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self):  # noqa: N802
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        self.head = head
        path = urlsplit(self.path).path
        self.synth._count(path)
        try:
            if path == "/robots.txt":
                self.synth._count_robots()
                return self._send(200, ROBOTS_TXT, "text/plain")
            if path.startswith("/hop/"):
                return self._hop(path)
            route = self.synth.routes.get(path)
            if route is None:
                return self._send(404, b"not found", "text/plain")
            self._serve_route(path, route)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (size cap, timeout): nothing left to do

    def _hop(self, path: str) -> None:
        # /hop/<k>/<route path>: k more redirects, then the real image with no fault.
        _, _, k, rest = path.split("/", 3)
        target = "/" + rest
        route = self.synth.routes.get(target)
        if route is None or not k.isdigit():
            return self._send(404, b"not found", "text/plain")
        if int(k) > 0:
            return self._redirect(route.get("status", 302), f"{self.synth.base_url}/hop/{int(k) - 1}{target}")
        self._send(200, self.synth.body(route), route["content_type"])

    def _serve_route(self, path: str, route: dict) -> None:
        fault = route.get("fault")
        if fault in ("http_404", "http_500"):
            return self._send(route["status"], b"<html><body>error</body></html>", "text/html")
        if fault == "redirect":
            return self._redirect(route["status"], f"{self.synth.base_url}/hop/{route['hops'] - 1}{path}")
        if fault == "blocked_redirect":
            return self._redirect(302, f"http://{BLOCKED_HOST}:{self.synth.port}/hop/0{path}")
        if fault == "transient" and self.synth._bump_transient(path) <= route["fail_times"]:
            return self._send(503, b"busy, try again", "text/plain", {"Retry-After": "0"})
        body = self.synth.body(route)
        headers = {}
        if fault == "noai":
            headers["X-Robots-Tag"] = route["x_robots_tag"]
        if fault == "timeout":
            return self._stall(route, body)
        if fault == "oversized":
            body = body + b"\0" * max(0, route["pad_to"] - len(body))
            return self._send(200, body, route["content_type"], headers, route["content_length"])
        self._send(200, body, route["content_type"], headers)

    def _stall(self, route: dict, body: bytes) -> None:
        if route["stall"] == "headers":
            if self.synth._wait():
                self._send(200, body, route["content_type"])
            return
        self._start(200, route["content_type"], len(body))
        if self.head:
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if self.synth._wait():
            self.wfile.write(body[len(body) // 2:])

    def _redirect(self, status: int, location: str) -> None:
        self._send(status, b"", "text/html", {"Location": location})

    def _start(self, status: int, ctype: str, length: int | None, headers: dict | None = None) -> None:
        self.synth._count_status(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None,
              content_length: bool = True) -> None:
        self._start(status, ctype, len(body) if content_length else None, headers)
        if self.head:
            return
        for i in range(0, len(body), _CHUNK):
            self.wfile.write(body[i:i + _CHUNK])


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class SynthServer:
    """A threaded stdlib HTTP server for a corpus written by :func:`curation.synth.generate`.

    Args:
        corpus_dir: the corpus folder (needs ``routes.json`` and ``images/``).
        host: a loopback address (default 127.0.0.1); anything else is refused.
        port: 0 picks a free port (see ``base_url``).
        stall_seconds: how long timeout routes stall; every stall ends at once on ``close()``.

    Counters (thread-safe): ``requests`` (total), ``hits[path]``, ``robots_fetches``,
    ``statuses[code]``.
    """

    def __init__(self, corpus_dir: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                 stall_seconds: float = 60.0):
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SynthError(f"SynthServer binds loopback addresses only, got host {host!r}")
        self.corpus_dir = Path(corpus_dir)
        routes_file = self.corpus_dir / "routes.json"
        if not routes_file.is_file():
            raise SynthError(f"not a synthetic corpus: {routes_file} is missing")
        self.routes: dict[str, dict] = json.loads(routes_file.read_text())
        self._check_routes()
        self.host, self._port, self.stall_seconds = host, port, stall_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._files: dict[str, bytes] = {}
        self._transient: Counter = Counter()
        self.requests, self.robots_fetches = 0, 0
        self.hits: Counter = Counter()
        self.statuses: Counter = Counter()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _check_routes(self) -> None:
        # routes.json is data: a route must name an existing file inside the corpus.
        root = self.corpus_dir.resolve()
        for path, route in self.routes.items():
            rel = route.get("file")
            if rel is None:
                continue
            target = (root / rel).resolve()
            if root not in target.parents or not target.is_file():
                raise SynthError(f"{self.corpus_dir / 'routes.json'}: route {path} names a missing "
                                 f"or outside file {rel!r}")

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SynthServer":
        """Bind and serve in a background thread; returns self."""
        if self._httpd is not None:
            return self
        self._stop.clear()
        self._httpd = _HTTPServer((self.host, self._port), _Handler)
        self._httpd.synth = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="synth-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; stalled responses end promptly. Safe to call twice."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "SynthServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def body(self, route: dict) -> bytes:
        """The bytes of a route's file (cached; files are immutable)."""
        rel = route["file"]
        if rel is None:
            return b""
        with self._lock:
            data = self._files.get(rel)
        if data is None:
            data = (self.corpus_dir / rel).read_bytes()
            with self._lock:
                self._files[rel] = data
        return data

    def url(self, path: str) -> str:
        return self.base_url + path

    def _wait(self) -> bool:
        """Stall; True when the stall ran out (respond), False when the server is closing."""
        return not self._stop.wait(self.stall_seconds)

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests += 1
            self.hits[path] += 1

    def _count_robots(self) -> None:
        with self._lock:
            self.robots_fetches += 1

    def _count_status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def _bump_transient(self, path: str) -> int:
        with self._lock:
            self._transient[path] += 1
            return self._transient[path]
