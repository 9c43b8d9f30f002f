"""A hardened HTTP(S) client for fetching images, one request at a time per thread.

We do our own fetching (``http.client``) instead of img2dataset's ``urllib`` opener so that
no handler for ``file:``/``ftp:``/``data:`` exists at all, and so that every redirect hop is
re-checked: URL normalisation, scheme (no https -> http unless allowed), DNS answer (we
connect to the checked address), robots.txt.

Guarantees per URL (per attempt):

* **One deadline** (``request_deadline``) covers DNS, connect, TLS handshake, status line,
  headers, ``1xx`` interim responses, body and chunked trailers, across every redirect hop.
  A watchdog thread shuts the socket down when it passes, so a server dripping one byte per
  socket timeout, sending endless ``100 Continue`` or endless trailers is cut off on time;
  DNS runs on a helper thread with the remaining time. Expiry records ``timeout``.
* Time spent waiting for the politeness service (per-host concurrency and rate, cluster-wide:
  :mod:`curation.cluster.limiter`) or for robots.txt is not charged to that deadline. A
  robots.txt fetch (once per origin for the whole run, shared) has its own deadline of the same
  length, so one URL's wall time is at most ``request_deadline`` times (1 + the origins its
  redirects reach for the first time), plus politeness waits. The worker's last-resort wait
  (:func:`await_fetch`) enforces the same bound from outside.
* **One byte cap** (``max_bytes``) covers every byte read from the socket: status lines,
  headers, interim responses, chunk framing, trailers and body.
* A body shorter than its ``Content-Length`` (or a chunked body cut off) is ``truncated``.
"""
from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from curation import status as st
from curation.cluster.limiter import Limits, Politeness, connect
from curation.download import urls
from curation.download.config import DownloadConfig
from curation.download.robots import (
    ALLOW_ALL,
    DISALLOW_ALL,
    ROBOTS_MAX_REDIRECTS,
    ROBOTS_PARSE_BYTES,
    ROBOTS_TTL,
    RobotsEntry,
    RobotsRules,
    entry_from_body,
    opted_out,
)
from curation.download.safety import AddressPolicy, Refused

_CHUNK = 64 * 1024
_HEADER_ALLOWANCE = 64 * 1024  # robots.txt: header bytes allowed on top of the parsed body
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class FetchResult:
    status: str
    error: str | None = None
    data: bytes | None = None
    final_url: str | None = None


# -- the deadline ---------------------------------------------------------------------------
class Budget:
    """The time one attempt at a URL may take, not counting waits for politeness/robots.

    ``deadline`` (monotonic) is set by :meth:`start` and pushed back by the time spent
    inside :meth:`paused`. Thread-safe to read from another thread (the worker's last-resort
    check uses :meth:`overdue`).
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline: float | None = None
        self._paused = 0

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds
        self._paused = 0

    def remaining(self) -> float:
        assert self.deadline is not None
        return self.deadline - time.monotonic()

    @contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.monotonic()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            if self.deadline is not None:
                self.deadline += time.monotonic() - t0

    def overdue(self, grace: float) -> bool:
        """True when the attempt is not waiting on politeness and ran ``grace`` seconds past
        its deadline (which the watchdog should have made impossible)."""
        d = self.deadline
        return d is not None and not self._paused and time.monotonic() > d + grace


class _Guard:
    """One armed deadline: shuts down whichever socket is attached when it expires."""

    __slots__ = ("deadline", "expired", "_active", "_sock", "_lock")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self._active = True
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def fire(self) -> None:
        with self._lock:
            if not self._active:
                return
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:  # the plain socket's shutdown, also for an SSLSocket (no TLS state touched)
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def disarm(self) -> None:
        """After this returns the guard never touches the socket again (so it may be closed
        and its file descriptor reused)."""
        with self._lock:
            self._active = False
            self._sock = None


class _Watchdog:
    """One daemon thread per process firing guards at their deadlines."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Guard]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> _Guard:
        guard = _Guard(deadline)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="curation-fetch-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._seq), guard))
            if self._heap[0][2] is guard:
                self._cond.notify()
        return guard

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, guard = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
            guard.fire()


WATCHDOG = _Watchdog()


# -- metered connections --------------------------------------------------------------------
class _Meter:
    """The response stream, counting every byte read against the cap."""

    def __init__(self, fp, cap: int):
        self._fp, self.cap, self.total = fp, cap, 0

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.cap:
            raise Refused(st.TOO_LARGE, f"response over the cap of {self.cap} bytes (headers included)")

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(limit)
        self._count(len(line))
        return line

    def read(self, n: int = -1) -> bytes:
        data = self._fp.read(n)
        self._count(len(data))
        return data

    def read1(self, n: int = -1) -> bytes:
        data = self._fp.read1(n)
        self._count(len(data))
        return data

    def readinto(self, b) -> int:
        n = self._fp.readinto(b)
        self._count(n or 0)
        return n

    def peek(self, n: int = 0) -> bytes:
        return self._fp.peek(n)

    def close(self) -> None:
        self._fp.close()

    def fileno(self) -> int:
        return self._fp.fileno()

    def flush(self) -> None:
        pass


class _Response(http.client.HTTPResponse):
    """Reads through a :class:`_Meter` and skips ``1xx`` interim responses (not only 100)."""

    def __init__(self, sock, *args, cap: int, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp = _Meter(self.fp, cap)  # type: ignore[assignment]

    def _read_status(self):
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if 100 < status < 200 and status != 101:
                http.client.parse_headers(self.fp)  # type: ignore[arg-type]  # 102/103: skip, read on
                continue
            return version, status, reason


class _Connection(http.client.HTTPConnection):
    """An HTTP connection to a pre-resolved, policy-checked address, under a guard."""

    def __init__(self, host: str, port: int, ip: str, timeout: float, guard: _Guard, cap: int):
        super().__init__(host, port, timeout=timeout)
        self._ip, self._guard, self._cap = ip, guard, cap

    def response_class(self, sock, **kwargs):  # type: ignore[override]
        return _Response(sock, cap=self._cap, **kwargs)

    def connect(self):
        family = socket.AF_INET6 if ":" in self._ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock = sock
        self._guard.attach(sock)
        sock.settimeout(self.timeout)
        sock.connect((self._ip, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TLSConnection(_Connection):
    default_port = 443
    _ctx = ssl.create_default_context()

    def connect(self):
        super().connect()
        tls = self._ctx.wrap_socket(self.sock, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock = tls
        self._guard.attach(tls)
        tls.do_handshake()


# -- the client -----------------------------------------------------------------------------
def limits_for(cfg: DownloadConfig) -> Limits:
    """The politeness limits of a config: leases outlive any request that holds them (a
    lease is held for one hop plus its rate-limit start delay); a robots.txt claim outlives the
    fetch's own deadline (a claimant that died blocks the origin that long at most; one that is
    merely slow, e.g. queued for a lease, lets a second caller fetch too, which is harmless)."""
    hold = cfg.per_host_concurrency / cfg.per_host_rate if cfg.per_host_rate else 0.0
    return Limits(cfg.per_host_concurrency, cfg.per_host_rate, lease_ttl=2 * (cfg.request_deadline + hold) + 60,
                  claim_ttl=2 * (cfg.request_deadline + hold) + 30)


class Client:
    """Fetches URLs under a :class:`DownloadConfig`'s safety and politeness settings.

    Thread-safe. Politeness (per-host concurrency and rate) and the robots.txt cache are
    shared by every client with the same limits: cluster-wide under Ray, process-wide
    otherwise (:func:`curation.cluster.limiter.connect`); parsed robots rules are also kept
    per client.
    """

    def __init__(self, cfg: DownloadConfig, politeness: Politeness | None = None):
        self.cfg = cfg
        self.policy = AddressPolicy(cfg.allow_private_networks)
        self.limits = limits_for(cfg)
        # a run has at most processes_count tasks of thread_count fetch threads each
        self.politeness = politeness if politeness is not None else connect(
            self.limits, max_in_flight=cfg.processes_count * cfg.thread_count)
        self._robots: dict[str, RobotsRules] = {}
        self._lock = threading.Lock()

    # -- one request ----------------------------------------------------------------
    def _request(self, url: str, budget: Budget, cap: int, body_limit: int | None = None,
                 ) -> tuple[int, http.client.HTTPMessage, bytes | None]:
        """One GET without following redirects, under ``budget``'s deadline.

        Returns (code, headers, body or None for non-2xx/opted-out). ``body_limit``: read at
        most that many body bytes and stop (no error). Raises Refused for policy, timeout,
        size and truncation.
        """
        scheme, host, port, target = urls.split(url)
        with budget.paused():
            token = self.politeness.acquire(host.lower())
        try:
            return self._exchange(scheme, host, port, target, budget, cap, body_limit)
        finally:
            self.politeness.release(host.lower(), token)

    def _exchange(self, scheme: str, host: str, port: int, target: str, budget: Budget, cap: int,
                  body_limit: int | None) -> tuple[int, http.client.HTTPMessage, bytes | None]:
        if budget.remaining() <= 0:
            raise Refused(st.TIMEOUT, f"request deadline of {self.cfg.request_deadline:g}s exceeded")
        guard = WATCHDOG.arm(budget.deadline)  # type: ignore[arg-type]
        conn: _Connection | None = None
        try:
            ip = self.policy.resolve(host, port, timeout=max(0.001, budget.remaining()))
            cls = _TLSConnection if scheme == "https" else _Connection
            conn = cls(host, port, ip, timeout=max(0.001, min(self.cfg.timeout, budget.remaining())), guard=guard,
                       cap=cap)
            conn.request("GET", target, headers={"User-Agent": self.cfg.user_agent,
                                                 "Accept": "image/*,*/*;q=0.8",
                                                 "Accept-Encoding": "identity", "Connection": "close"})
            resp = conn.getresponse()
            if resp.status < 200:
                raise Refused(st.http_status(resp.status), f"unexpected interim response HTTP {resp.status}")
            if resp.status >= 300:
                return resp.status, resp.headers, None
            if body_limit is None and opted_out(resp.headers.get_all("X-Robots-Tag") or [],
                                                self.cfg.user_agent_token, self.cfg.opt_out_directives):
                return resp.status, resp.headers, None  # the caller records opted_out; body unread
            length = resp.headers.get("Content-Length")
            if body_limit is None and length and length.strip().isdigit() and int(length) > cap:
                raise Refused(st.TOO_LARGE, f"Content-Length {length.strip()} over the cap of {cap} bytes")
            return resp.status, resp.headers, self._read_body(conn, resp, budget, body_limit, guard)
        except Refused as e:
            if guard.expired and e.status not in (st.TOO_LARGE, st.TIMEOUT):
                raise self._expired() from None
            raise
        except http.client.IncompleteRead as e:
            if guard.expired:
                raise self._expired() from None
            raise Refused(st.TRUNCATED, f"chunked body cut off after {len(e.partial)} bytes of a chunk") from None
        except socket.timeout:
            if guard.expired:
                raise self._expired() from None
            raise Refused(st.TIMEOUT, f"timed out after {self.cfg.timeout:g}s (connect/read)") from None
        except ssl.SSLError as e:
            if guard.expired:
                raise self._expired() from None
            raise Refused(st.CONNECTION_ERROR, f"TLS error: {e}") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            if guard.expired:
                raise self._expired() from None
            raise Refused(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
        finally:
            guard.disarm()
            if conn is not None:
                conn.close()

    def _expired(self) -> Refused:
        return Refused(st.TIMEOUT, f"whole-request deadline of {self.cfg.request_deadline:g}s exceeded "
                                   "(watchdog closed the connection)")

    def _read_body(self, conn: _Connection, resp: http.client.HTTPResponse, budget: Budget,
                   limit: int | None, guard: _Guard) -> bytes:
        chunks, total = [], 0
        while True:
            remaining = budget.remaining()
            if remaining <= 0:
                raise self._expired()
            if conn.sock is not None:
                conn.sock.settimeout(max(0.001, min(self.cfg.timeout, remaining)))
            chunk = resp.read1(_CHUNK if limit is None else max(1, min(_CHUNK, limit - total)))
            if not chunk:
                if guard.expired:  # the watchdog's shutdown reads as end of stream
                    raise self._expired()
                left = resp.length  # bytes still expected by Content-Length (None: chunked/close)
                if left:
                    raise Refused(st.TRUNCATED, f"body ended after {total} bytes, {left} short of its "
                                                "Content-Length")
                return b"".join(chunks)
            total += len(chunk)
            chunks.append(chunk)
            if limit is not None and total >= limit:
                return b"".join(chunks)[:limit]

    # -- robots.txt -----------------------------------------------------------------
    def robots_denial(self, url: str) -> tuple[str, str] | None:
        """``(status, why)`` when robots.txt forbids ``url`` for our token or img2dataset, else None."""
        rules = self._robots_for(urls.origin(url))
        return rules.denial(url, self.cfg.user_agent_token)

    def _robots_for(self, origin: str) -> RobotsRules:
        with self._lock:
            rules = self._robots.get(origin)
        if rules is not None and rules.entry.expires > time.time():
            return rules
        key = "robots:" + origin
        entry = self.politeness.shared_get(key)
        if entry is None or entry.expires <= time.time():
            try:
                entry = self._fetch_robots(origin)
            finally:
                if entry is None:  # an unexpected error: never leave the claim hanging
                    entry = RobotsEntry(DISALLOW_ALL, reason=f"robots.txt for {origin} could not be read",
                                        expires=time.time() + self.cfg.robots_error_ttl)
                self.politeness.shared_put(key, entry, entry.expires)
        rules = RobotsRules(entry)
        with self._lock:
            self._robots[origin] = rules
        return rules

    def _fetch_robots(self, origin: str) -> RobotsEntry:
        """RFC 9309 2.3.1: follow up to 5 redirects (each hop address-checked); 2xx: rules;
        4xx but 429, or too many redirects: allow all; else disallow all for a short TTL."""
        url = origin + "/robots.txt"
        hops = 0
        budget = Budget(self.cfg.request_deadline)
        budget.start()

        def unreachable(why: str) -> RobotsEntry:
            ttl = self.cfg.robots_error_ttl
            return RobotsEntry(DISALLOW_ALL, reason=f"robots.txt for {origin} unreachable ({why}): everything "
                                                    f"disallowed for {ttl:g}s, then fetched again",
                               expires=time.time() + ttl)

        try:
            while True:
                code, headers, body = self._request(url, budget, ROBOTS_PARSE_BYTES + _HEADER_ALLOWANCE,
                                                    body_limit=ROBOTS_PARSE_BYTES + 1)
                if code in _REDIRECTS:
                    loc = headers.get("Location")
                    if not loc:
                        return RobotsEntry(ALLOW_ALL, reason="redirect without Location",
                                           expires=time.time() + ROBOTS_TTL)
                    if hops == ROBOTS_MAX_REDIRECTS:
                        return RobotsEntry(ALLOW_ALL, reason="more than 5 redirects", expires=time.time() + ROBOTS_TTL)
                    url = urls.resolve(url, loc)
                    hops += 1
                    continue
                if 200 <= code < 300:
                    return entry_from_body(body or b"")
                if code == 429 or code >= 500:
                    return unreachable(f"HTTP {code}")
                return RobotsEntry(ALLOW_ALL, reason=f"HTTP {code}", expires=time.time() + ROBOTS_TTL)
        except Refused as e:
            if hops == 0 and e.status in (st.BLOCKED_ADDRESS, st.BAD_URL):
                # our own policy refuses the origin: its image requests are refused the same way
                return RobotsEntry(ALLOW_ALL, reason=str(e), expires=time.time() + self.cfg.robots_error_ttl)
            return unreachable(f"{e.status}: {e}")

    # -- public ---------------------------------------------------------------------
    def fetch(self, url: str | None, budget: Budget | None = None) -> FetchResult:
        """Fetch one image URL, following up to ``max_redirects`` re-checked redirects.

        ``budget`` (started here) lets a caller watch the attempt's deadline. Never raises:
        every outcome is a :class:`FetchResult` with a curation status.
        """
        budget = budget if budget is not None else Budget(self.cfg.request_deadline)
        budget.start()
        current: Any = url
        try:
            current = urls.normalize(url)
            for _hop in range(self.cfg.max_redirects + 1):
                if self.cfg.respect_robots_txt:
                    with budget.paused():
                        denial = self.robots_denial(current)
                    if denial:
                        return FetchResult(denial[0], denial[1], final_url=current)
                code, headers, body = self._request(current, budget, self.cfg.max_bytes)
                if code in _REDIRECTS:
                    loc = headers.get("Location")
                    if not loc:
                        return FetchResult(st.http_status(code), "redirect without Location", final_url=current)
                    nxt = urls.resolve(current, loc)
                    if current.startswith("https:") and nxt.startswith("http:") and not self.cfg.allow_https_downgrade:
                        return FetchResult(st.BAD_URL, f"redirect from https to http refused ({nxt[:200]}); set "
                                                       "allow_https_downgrade to follow it", final_url=current)
                    current = nxt
                    continue
                if code >= 300:
                    return FetchResult(st.http_status(code), f"HTTP {code}", final_url=current)
                directive = opted_out(headers.get_all("X-Robots-Tag") or [], self.cfg.user_agent_token,
                                      self.cfg.opt_out_directives)
                if directive:
                    return FetchResult(st.OPTED_OUT, f"X-Robots-Tag: {directive}", final_url=current)
                return FetchResult(st.SUCCESS, None, body, current)
            return FetchResult(st.TOO_MANY_REDIRECTS, f"more than {self.cfg.max_redirects} redirects",
                               final_url=current)
        except Refused as e:
            return FetchResult(e.status, str(e), final_url=current)
        except Exception as e:  # a bug or an exotic failure must still yield one row
            return FetchResult(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}", final_url=current)


# -- above the fetch ------------------------------------------------------------------------
LAST_RESORT_GRACE_S = 10.0
_POLL_S = 1.0


def fetch_with_retries(client: Client, url: str | None, retries: int, budget: Budget | None = None) -> FetchResult:
    """``client.fetch`` plus up to ``retries`` further attempts while the status is retryable;
    each attempt restarts ``budget`` (so the deadline is per attempt)."""
    budget = budget if budget is not None else Budget(client.cfg.request_deadline)
    res = client.fetch(url, budget)
    for _ in range(retries):
        if not st.is_retryable(res.status):
            break
        res = client.fetch(url, budget)
    return res


def await_fetch(fut, budget: Budget, grace: float = LAST_RESORT_GRACE_S) -> FetchResult:
    """The last-resort wait on a fetch running in a thread pool: the result, or ``timeout``
    once the attempt is ``grace`` seconds past its deadline (the watchdog should have ended it;
    this guards against what it cannot interrupt). Time queued or waiting for politeness does
    not count, so a long per-host queue is never cut short."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        try:
            return fut.result(timeout=_POLL_S)
        except FutureTimeout:
            if budget.overdue(grace):
                fut.cancel()
                return FetchResult(st.TIMEOUT, f"fetch thread still running {grace:g}s past its deadline of "
                                               f"{budget.seconds:g}s (last-resort timeout; thread abandoned)")
