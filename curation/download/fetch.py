"""A hardened HTTP(S) client for fetching images, one request at a time per thread.

We do our own fetching (``http.client``) instead of img2dataset's ``urllib`` opener so that
no handler for ``file:``/``ftp:``/``data:`` exists at all, and so that every redirect hop is
re-checked: scheme, DNS answer (connecting to the checked address), robots.txt. Each fetch
has a connect/read timeout, a whole-request deadline and a response byte cap, so time and
memory per URL are bounded whatever the server does.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.robotparser
from dataclasses import dataclass
from urllib.parse import urljoin

from curation import status as st
from curation.download.config import DownloadConfig
from curation.download.safety import AddressPolicy, Refused, opted_out, parse_url

_CHUNK = 64 * 1024


@dataclass
class FetchResult:
    status: str
    error: str | None = None
    data: bytes | None = None
    final_url: str | None = None


class _Connection(http.client.HTTPConnection):
    """An HTTP connection to a pre-resolved, policy-checked address."""

    def __init__(self, host: str, port: int, ip: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TLSConnection(_Connection):
    _ctx = ssl.create_default_context()

    def connect(self):
        super().connect()
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self.host)


class HostLimiter:
    """Per-host politeness: at most ``concurrency`` requests in flight and optionally at
    most ``rate`` request starts per second per host (within one task's threads)."""

    def __init__(self, concurrency: int, rate: float | None):
        self.concurrency, self.rate = concurrency, rate
        self._lock = threading.Lock()
        self._sems: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}

    def acquire(self, host: str) -> None:
        with self._lock:
            sem = self._sems.setdefault(host, threading.BoundedSemaphore(self.concurrency))
        sem.acquire()
        if self.rate:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + 1.0 / self.rate
            if start > now:
                time.sleep(start - now)

    def release(self, host: str) -> None:
        self._sems[host].release()


class Client:
    """Fetches URLs under a :class:`DownloadConfig`'s safety and politeness settings.

    Thread-safe; robots.txt is fetched at most once per ``scheme://host:port`` per client
    (one client per download task) and cached.
    """

    def __init__(self, cfg: DownloadConfig):
        self.cfg = cfg
        self.policy = AddressPolicy(cfg.allow_private_networks)
        self.limiter = HostLimiter(cfg.per_host_concurrency, cfg.per_host_rate)
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # -- one request ----------------------------------------------------------------
    def _request(self, url: str, deadline: float, cap: int) -> tuple[int, http.client.HTTPMessage, bytes | None]:
        """One GET without following redirects. Returns (code, headers, body or None for
        redirects/errors). Raises Refused for policy, timeout and size violations."""
        scheme, host, port, path = parse_url(url)
        ip = self.policy.resolve(host, port)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(st.TIMEOUT, "request deadline exceeded")
        cls = _TLSConnection if scheme == "https" else _Connection
        conn = cls(host, port, ip, timeout=min(self.cfg.timeout, remaining))
        self.limiter.acquire(host)
        try:
            conn.request("GET", path, headers={"User-Agent": self.cfg.user_agent, "Accept": "image/*,*/*;q=0.8",
                                               "Accept-Encoding": "identity", "Connection": "close"})
            resp = conn.getresponse()
            if resp.status >= 300:
                return resp.status, resp.headers, None
            if opted_out(resp.headers.get_all("X-Robots-Tag") or [], self.cfg.user_agent_token,
                         self.cfg.opt_out_directives):
                return resp.status, resp.headers, None  # the caller records opted_out; body unread
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise Refused(st.TOO_LARGE, f"Content-Length {length} over the cap of {cap} bytes")
            return resp.status, resp.headers, self._read_body(conn, resp, deadline, cap)
        except socket.timeout:
            raise Refused(st.TIMEOUT, f"timed out after {self.cfg.timeout}s (connect/read)") from None
        except ssl.SSLError as e:
            raise Refused(st.CONNECTION_ERROR, f"TLS error: {e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise Refused(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
        finally:
            conn.close()
            self.limiter.release(host)

    def _read_body(self, conn, resp, deadline: float, cap: int) -> bytes:
        chunks, total = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Refused(st.TIMEOUT, f"whole-request deadline of {self.cfg.request_deadline}s exceeded")
            if conn.sock is not None:
                conn.sock.settimeout(min(self.cfg.timeout, remaining))
            chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > cap:
                raise Refused(st.TOO_LARGE, f"response over the cap of {cap} bytes")
            chunks.append(chunk)

    # -- robots.txt -----------------------------------------------------------------
    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser | None:
        scheme, host, port, _ = parse_url(url)
        origin = f"{scheme}://{host}:{port}"
        with self._lock:
            if origin in self._robots:
                return self._robots[origin]
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:  # one fetch per origin even when many threads ask at once
            if origin not in self._robots:
                self._robots[origin] = self._fetch_robots(origin)
            return self._robots[origin]

    def _fetch_robots(self, origin: str) -> urllib.robotparser.RobotFileParser | None:
        """RFC 9309: 4xx means no rules; 5xx means disallow everything; an unreachable
        host means no rules (the image fetch then records its own connection failure)."""
        rp = urllib.robotparser.RobotFileParser()
        deadline = time.monotonic() + self.cfg.request_deadline
        try:
            code, _, body = self._request(origin + "/robots.txt", deadline, 512 * 1024)
        except Refused:
            return None
        if 200 <= code < 300 and body is not None:
            rp.parse(body.decode("utf-8", "replace").splitlines())
            return rp
        if code >= 500:
            rp.disallow_all = True
            return rp
        return None

    def robots_allows(self, url: str) -> bool:
        rp = self._robots_for(url)
        return rp is None or rp.can_fetch(self.cfg.user_agent_token, url)

    # -- public ---------------------------------------------------------------------
    def fetch(self, url: str) -> FetchResult:
        """Fetch one image URL, following up to ``max_redirects`` re-checked redirects.

        Never raises: every outcome is a :class:`FetchResult` with a curation status.
        """
        deadline = time.monotonic() + self.cfg.request_deadline
        current = url
        try:
            for _hop in range(self.cfg.max_redirects + 1):
                parse_url(current)
                if self.cfg.respect_robots_txt and not self.robots_allows(current):
                    return FetchResult(st.ROBOTS_DISALLOWED, f"robots.txt disallows {current}", final_url=current)
                code, headers, body = self._request(current, deadline, self.cfg.max_bytes)
                if code in (301, 302, 303, 307, 308):
                    loc = headers.get("Location")
                    if not loc:
                        return FetchResult(st.http_status(code), "redirect without Location", final_url=current)
                    current = urljoin(current, loc.strip())
                    continue
                if code >= 300:
                    return FetchResult(st.http_status(code), f"HTTP {code}", final_url=current)
                directive = opted_out(headers.get_all("X-Robots-Tag") or [], self.cfg.user_agent_token,
                                      self.cfg.opt_out_directives)
                if directive:
                    return FetchResult(st.OPTED_OUT, f"X-Robots-Tag: {directive}", final_url=current)
                return FetchResult(st.SUCCESS, None, body, current)
            return FetchResult(st.TOO_MANY_REDIRECTS, f"more than {self.cfg.max_redirects} redirects", final_url=current)
        except Refused as e:
            return FetchResult(e.status, str(e), final_url=current)
        except Exception as e:  # a bug or an exotic failure must still yield one row
            return FetchResult(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}", final_url=current)
