"""Cluster-wide politeness: per-host concurrency and request-rate limits, and a shared
per-origin cache (robots.txt), for every task and node of a Ray cluster.

One service per distinct set of limits: under Ray, a named, detached, zero-CPU async actor
(namespace ``curation``) that every download task finds by name - so 100 tasks on one host
together stay within ``concurrency`` requests in flight and ``rate`` request starts per second,
instead of 100 times that; without Ray, one in-process service shared by every thread. Callers
use :func:`connect` and the small :class:`Politeness` API; they never see Ray.

Guarantees:

* at most ``concurrency`` leases per host are held at once, cluster-wide; a lease not released
  within ``lease_ttl`` seconds (its task died) is reclaimed;
* with ``rate``, consecutive lease starts for one host are at least ``1 / rate`` seconds apart
  (the service reserves start times; the caller sleeps until its start);
* every call returns or raises within a bounded time: a service that does not answer within
  ``call_timeout`` seconds raises :class:`LimiterUnavailable` (a dead actor is replaced once);
* :meth:`Politeness.shared_get` / :meth:`Politeness.shared_put` give single-flight fetching of
  a per-origin value: while one caller fetches (its claim lasts ``claim_ttl``), others wait;
* the actor exits by itself after ``idle_exit`` seconds without calls and without leases.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from curation.errors import CurationError

NAMESPACE = "curation"
_POLL_S = 5.0          # longest a service call blocks before the caller asks again
_CALL_TIMEOUT_S = 60.0  # last resort on one service call
_WAIT = "__wait__"      # shared_get: someone else is fetching; ask again


class LimiterUnavailable(CurationError):
    """The politeness service did not answer in time (or could not be started)."""


@dataclass(frozen=True)
class Limits:
    """The limits one service enforces (services are shared by everything with equal limits)."""

    concurrency: int
    rate: float | None = None
    lease_ttl: float = 300.0
    claim_ttl: float = 120.0
    idle_exit: float = 600.0

    def service_name(self) -> str:
        key = f"{self.concurrency}|{self.rate}|{self.lease_ttl}|{self.claim_ttl}".encode()
        return "curation-politeness-" + hashlib.sha1(key).hexdigest()[:12]


@dataclass
class _Book:
    """The bookkeeping both services share (no locking here; callers hold their lock)."""

    limits: Limits
    leases: dict[str, dict[int, float]] = field(default_factory=dict)
    next_start: dict[str, float] = field(default_factory=dict)
    shared: dict[str, tuple[float, Any]] = field(default_factory=dict)   # key -> (expires wall time, value)
    claims: dict[str, float] = field(default_factory=dict)               # key -> claim expiry (monotonic)
    last_call: float = field(default_factory=time.monotonic)
    _ids: int = 0

    def grant(self, host: str) -> tuple[int, float] | None:
        """(token, seconds to wait before starting) or None when every slot is taken."""
        now = time.monotonic()
        self.last_call = now
        held = self.leases.setdefault(host, {})
        for tok, t in list(held.items()):
            if now - t > self.limits.lease_ttl:
                del held[tok]  # its holder died without releasing
        if len(held) >= self.limits.concurrency:
            return None
        self._ids += 1
        held[self._ids] = now
        delay = 0.0
        if self.limits.rate:
            start = max(now, self.next_start.get(host, now))
            self.next_start[host] = start + 1.0 / self.limits.rate
            delay = start - now
        return self._ids, delay

    def release(self, host: str, token: int) -> None:
        self.last_call = time.monotonic()
        held = self.leases.get(host)
        if held is not None:
            held.pop(token, None)
            if not held:
                del self.leases[host]

    def lookup(self, key: str) -> Any:
        """The cached value; None: the caller must fetch it (it now holds the claim); _WAIT."""
        now = time.monotonic()
        self.last_call = now
        hit = self.shared.get(key)
        if hit is not None and hit[0] > time.time():
            return hit[1]
        claim = self.claims.get(key)
        if claim is not None and claim > now:
            return _WAIT
        self.claims[key] = now + self.limits.claim_ttl
        return None

    def store(self, key: str, value: Any, expires: float) -> None:
        self.last_call = time.monotonic()
        self.shared[key] = (expires, value)
        self.claims.pop(key, None)

    def busy(self) -> bool:
        return bool(self.leases) or bool(self.claims)


class Politeness(Protocol):
    """What fetching code uses (both services implement it)."""

    def acquire(self, host: str) -> int:
        """Block until a lease for ``host`` is granted and its start time has come; return its token."""
        ...

    def release(self, host: str, token: int) -> None:
        """Give a lease back (never blocks)."""
        ...

    def shared_get(self, key: str) -> Any:
        """The cached value for ``key``, or None: then this caller must compute it and
        :meth:`shared_put` it (others asking meanwhile wait for that)."""
        ...

    def shared_put(self, key: str, value: Any, expires: float) -> None:
        """Store ``value`` for ``key`` until wall-clock time ``expires``."""
        ...


class LocalPoliteness:
    """The in-process service (threads of one process)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._book = _Book(limits)
        self._cond = threading.Condition()

    def acquire(self, host: str) -> int:
        with self._cond:
            while (grant := self._book.grant(host)) is None:
                self._cond.wait(timeout=_POLL_S)
        token, delay = grant
        if delay > 0:
            time.sleep(delay)
        return token

    def release(self, host: str, token: int) -> None:
        with self._cond:
            self._book.release(host, token)
            self._cond.notify_all()

    def shared_get(self, key: str) -> Any:
        with self._cond:
            while (value := self._book.lookup(key)) is _WAIT:
                self._cond.wait(timeout=_POLL_S)
            return value

    def shared_put(self, key: str, value: Any, expires: float) -> None:
        with self._cond:
            self._book.store(key, value, expires)
            self._cond.notify_all()


class _ServiceActor:
    """The Ray actor behind :class:`ClusterPoliteness` (async: waiting callers cost nothing)."""

    def __init__(self, limits: Limits):
        self._book = _Book(limits)
        self._cond: asyncio.Condition | None = None
        self._reaper: asyncio.Task | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        return self._cond

    async def _reap(self) -> None:
        import ray

        limits = self._book.limits
        while True:
            await asyncio.sleep(min(30.0, limits.idle_exit))
            if not self._book.busy() and time.monotonic() - self._book.last_call > limits.idle_exit:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _wait(self, cond: asyncio.Condition, until: float) -> bool:
        try:
            await asyncio.wait_for(cond.wait(), timeout=max(0.0, until - time.monotonic()))
        except asyncio.TimeoutError:
            return False
        return True

    async def acquire_many(self, hosts: list[str]) -> list[tuple[int, float] | None]:
        """Grants for a batch of requests: every one grantable now; when none is, wait (at most
        one poll period) until a release makes one grantable."""
        cond = self._condition()
        until = time.monotonic() + _POLL_S
        out: list[tuple[int, float] | None] = [None] * len(hosts)
        async with cond:
            while True:
                for i, h in enumerate(hosts):
                    if out[i] is None:
                        out[i] = self._book.grant(h)
                if any(g is not None for g in out) or not await self._wait(cond, until):
                    return out

    async def release_many(self, leases: list[tuple[str, int]]) -> None:
        cond = self._condition()
        async with cond:
            for host, token in leases:
                self._book.release(host, token)
            cond.notify_all()

    async def shared_get(self, key: str) -> Any:
        cond = self._condition()
        until = time.monotonic() + _POLL_S
        async with cond:
            while (value := self._book.lookup(key)) is _WAIT:
                if not await self._wait(cond, until):
                    return _WAIT
            return value

    async def shared_put(self, key: str, value: Any, expires: float) -> None:
        cond = self._condition()
        async with cond:
            self._book.store(key, value, expires)
            cond.notify_all()

    async def stats(self) -> dict[str, Any]:
        return {"leases": {h: len(v) for h, v in self._book.leases.items()}, "shared": len(self._book.shared)}


class _Request:
    __slots__ = ("host", "event", "grant", "error", "sent_at", "failures")

    def __init__(self, host: str):
        self.host = host
        self.event = threading.Event()
        self.grant: tuple[int, float] | None = None
        self.error: Exception | None = None
        self.sent_at: float | None = None  # monotonic time of the batch now carrying it, if any
        self.failures = 0


class ClusterPoliteness:
    """Client of the cluster-wide service (one named actor per :class:`Limits`).

    A dispatcher thread batches the process's lease requests and releases into one actor call
    each (at most three acquire batches in flight), so the actor's per-call cost is paid per
    batch, not per request: with 32 fetch threads a task needs a few calls per batch of
    requests instead of one per URL.
    """

    _MAX_INFLIGHT = 3
    _MAX_BATCH = 512

    def __init__(self, limits: Limits, call_timeout: float = _CALL_TIMEOUT_S):
        self.limits, self.call_timeout = limits, call_timeout
        self._actor = None
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._queue: list[_Request] = []
        self._releases: list[tuple[str, int]] = []
        self._inflight = 0
        self._thread: threading.Thread | None = None

    def _handle(self, fresh: bool = False):
        import ray

        with self._lock:
            if self._actor is None or fresh:
                cls = ray.remote(_ServiceActor)
                try:
                    self._actor = cls.options(num_cpus=0, max_restarts=0, max_concurrency=1000,
                                              name=self.limits.service_name(), namespace=NAMESPACE,
                                              lifetime="detached", get_if_exists=True).remote(self.limits)
                except Exception as e:
                    raise LimiterUnavailable(f"cannot start the politeness service: {e}") from None
            return self._actor

    def _call(self, method: str, *args: Any) -> Any:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for attempt in (0, 1):
            actor = self._handle(fresh=attempt == 1)
            try:
                return ray.get(getattr(actor, method).remote(*args), timeout=self.call_timeout)
            except GetTimeoutError:
                raise LimiterUnavailable(f"politeness service did not answer {method} within "
                                         f"{self.call_timeout:g} s") from None
            except RayActorError:
                if attempt == 1:
                    raise LimiterUnavailable("politeness service died twice in a row") from None
        raise AssertionError("unreachable")

    # -- batched leases -----------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._dispatch, name="curation-politeness", daemon=True)
            self._thread.start()

    def _dispatch(self) -> None:
        while True:
            with self._cv:
                while not self._releases and not (self._queue and self._inflight < self._MAX_INFLIGHT):
                    self._cv.wait(timeout=1.0)
                batch: list[_Request] = []
                if self._queue and self._inflight < self._MAX_INFLIGHT:
                    batch, self._queue = self._queue[:self._MAX_BATCH], self._queue[self._MAX_BATCH:]
                    self._inflight += 1
                releases, self._releases = self._releases, []
            try:
                actor = self._handle()
                if releases:
                    actor.release_many.remote(releases)  # fire and forget; a lost release expires
                if batch:
                    now = time.monotonic()
                    for r in batch:
                        r.sent_at = now
                    fut = actor.acquire_many.remote([r.host for r in batch]).future()
                    fut.add_done_callback(lambda f, batch=batch: self._deliver(batch, f))
            except Exception as e:  # could not even submit: fail these requests, keep serving
                if batch:
                    self._deliver(batch, None, error=e)

    def _deliver(self, batch: list[_Request], fut, error: Exception | None = None) -> None:
        grants: list | None = None
        if error is None:
            try:
                grants = fut.result()
            except Exception as e:
                error = e
        again: list[_Request] = []
        for i, r in enumerate(batch):
            r.sent_at = None
            if grants is not None and grants[i] is not None:
                r.grant = grants[i]
                r.event.set()
            elif grants is not None:
                again.append(r)  # every slot of its host still taken: ask again
            else:
                r.failures += 1
                if r.failures >= 2:
                    r.error = LimiterUnavailable(f"politeness service failed twice: {error}")
                    r.event.set()
                else:
                    again.append(r)
        if grants is None:
            with self._lock:
                self._actor = None  # a dead actor: the next batch finds or starts a new one
        with self._cv:
            self._inflight -= 1
            self._queue.extend(again)
            self._cv.notify_all()

    def acquire(self, host: str) -> int:
        req = _Request(host)
        with self._cv:
            self._start()
            self._queue.append(req)
            self._cv.notify_all()
        while not req.event.wait(timeout=1.0):
            sent = req.sent_at
            if sent is not None and time.monotonic() - sent > self.call_timeout:
                raise LimiterUnavailable(f"politeness service did not answer within {self.call_timeout:g} s")
        if req.error is not None:
            raise req.error
        assert req.grant is not None
        token, delay = req.grant
        if delay > 0:
            time.sleep(delay)
        return token

    def release(self, host: str, token: int) -> None:
        with self._cv:
            self._start()
            self._releases.append((host, token))
            self._cv.notify_all()

    def shared_get(self, key: str) -> Any:
        while (value := self._call("shared_get", key)) == _WAIT:
            pass
        return value

    def shared_put(self, key: str, value: Any, expires: float) -> None:
        self._call("shared_put", key, value, expires)

    def stats(self) -> dict[str, Any]:
        return self._call("stats")


_local: dict[Limits, LocalPoliteness] = {}
_cluster: dict[Limits, ClusterPoliteness] = {}
_registry_lock = threading.Lock()


class _NonBinding:
    """Limits that can never bind (no rate; more slots than requests can ever be in flight):
    leases cost nothing, the shared cache still goes to the service."""

    def __init__(self, service: Politeness):
        self.service = service

    def acquire(self, host: str) -> int:
        return 0

    def release(self, host: str, token: int) -> None:
        pass

    def shared_get(self, key: str) -> Any:
        return self.service.shared_get(key)

    def shared_put(self, key: str, value: Any, expires: float) -> None:
        self.service.shared_put(key, value, expires)


def connect(limits: Limits, *, cluster: bool | None = None, max_in_flight: int | None = None) -> Politeness:
    """The politeness service for ``limits``: cluster-wide when Ray is running here (a Ray
    task or a driver that started Ray) or ``cluster`` is True, else in-process. One client per
    process and ``limits``, so all of a process's threads and fetch clients share it.

    ``max_in_flight``: the most requests the caller's whole run can have in flight at once
    (tasks x threads); when it is within ``limits.concurrency`` and there is no rate, the limits
    cannot bind and leases are skipped (no service call per request).
    """
    if cluster is None:
        try:
            import ray

            cluster = ray.is_initialized()
        except ImportError:
            cluster = False
    with _registry_lock:
        service: Politeness
        if cluster:
            service = _cluster.setdefault(limits, ClusterPoliteness(limits))
        else:
            service = _local.setdefault(limits, LocalPoliteness(limits))
    if limits.rate is None and max_in_flight is not None and max_in_flight <= limits.concurrency:
        return _NonBinding(service)
    return service
