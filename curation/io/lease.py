"""Writer leases: one writer per output (a dataset root) at a time.

A writer takes the lease ``<root>/_lease.json`` by exclusive create (``O_EXCL`` locally,
a conditional PUT ``If-None-Match: *`` on S3; see :func:`curation.io.fs.create_exclusive`)
before it writes anything, and holds it until its manifest is committed. The lease records
the run id, host, pid and a heartbeat that a background thread refreshes every ``ttl / 4``
seconds while the writer lives (compare-and-swap on S3, so a writer that lost its lease
notices instead of overwriting the new holder's record).

Guarantees:

* a second writer (another run id) is refused with a :class:`LeaseError` naming the holder
  (run id, host, pid, heartbeat age);
* a lease whose holder is provably dead (same host, pid gone: a killed run being resumed)
  is taken over without asking, so ``kill -9`` + rerun keeps working;
* any other lease is broken only when asked (``break_lease=True``, CLI ``--break-lease``,
  or ``CURATION_BREAK_LEASE=1``) *and* its heartbeat is older than the ttl;
* Ray tasks attached to a claimed output write under the holder's run id, and a task whose
  run no longer holds the lease is refused before it commits anything
  (:func:`verify_holder`).

The same run id may hold the lease several times (a pipeline's stages in one process);
it is released when the last holder releases it or is garbage-collected.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any

import fsspec

from curation.errors import DatasetError
from curation.io.fs import PreconditionFailed, create_exclusive, join, read_with_tag, replace_if_match

LEASE = "_lease.json"
DEFAULT_TTL = 120.0

_RUN_ID: str | None = None
_LOCK = threading.Lock()
_HELD: dict[tuple[str, str], "Lease"] = {}


class LeaseError(DatasetError):
    """Another run holds the output's writer lease (the message names it), or ours was lost."""


def current_run_id() -> str:
    """This process's run id: ``CURATION_RUN_ID`` if set, else one random id per process."""
    global _RUN_ID
    env = os.environ.get("CURATION_RUN_ID")
    if env:
        return env
    if _RUN_ID is None:
        _RUN_ID = uuid.uuid4().hex[:12]
    return _RUN_ID


def lease_ttl() -> float:
    """Seconds after which a silent lease counts as stale (``CURATION_LEASE_TTL``, default 120)."""
    try:
        return float(os.environ.get("CURATION_LEASE_TTL") or DEFAULT_TTL)
    except ValueError:
        return DEFAULT_TTL


def break_requested() -> bool:
    return os.environ.get("CURATION_BREAK_LEASE", "").lower() in ("1", "true", "yes")


def _proto(fs: fsspec.AbstractFileSystem) -> str:
    p = fs.protocol
    return p if isinstance(p, str) else p[0]


def read_holder(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, Any] | None:
    """The lease record of ``root`` (``run_id``, ``host``, ``pid``, ``heartbeat``, ...), or None."""
    try:
        data, _ = read_with_tag(fs, join(root, LEASE))
    except FileNotFoundError:
        return None
    return _parse(data)


def _parse(data: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(data)
        if isinstance(rec, dict):
            return rec
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    return {"run_id": "?", "host": "?", "pid": None, "heartbeat": None, "unreadable": True}


def describe(rec: dict[str, Any], now: float | None = None) -> str:
    """``run 3f2a... (host h, pid 12, heartbeat 4s ago)`` for error messages."""
    hb = rec.get("heartbeat")
    age = f"{max(0.0, (now or time.time()) - float(hb)):.0f}s ago" if isinstance(hb, (int, float)) else "unknown"
    what = f" writing {rec['purpose']}" if rec.get("purpose") else ""
    return f"run {rec.get('run_id')}{what} (host {rec.get('host')}, pid {rec.get('pid')}, heartbeat {age})"


def _holder_dead(rec: dict[str, Any]) -> bool:
    """True only when the holder certainly is gone: same host, and its pid does not exist."""
    if rec.get("host") != socket.gethostname() or not isinstance(rec.get("pid"), int):
        return False
    if rec["pid"] == os.getpid():
        return False
    try:
        os.kill(rec["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    """A held writer lease on one output root (create with :func:`acquire`)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str, run_id: str, ttl: float, purpose: str):
        self.fs, self.root, self.url = fs, root, url
        self.path = join(root, LEASE)
        self.run_id, self.ttl, self.purpose = run_id, ttl, purpose
        self.etag: str | None = None
        self.lost: str | None = None
        self.refs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def record(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "heartbeat": time.time(), "ttl": self.ttl, "purpose": self.purpose}

    # -- taking it ----------------------------------------------------------------------
    def _take(self, break_lease: bool) -> None:
        for _ in range(5):
            try:
                self.etag = create_exclusive(self.fs, self.path, json.dumps(self.record()).encode())
                return
            except PreconditionFailed:
                pass
            try:
                data, etag = read_with_tag(self.fs, self.path)
            except FileNotFoundError:
                continue  # released in between: try again
            rec = _parse(data)
            if rec.get("run_id") == self.run_id:
                self.etag = self._swap(etag)  # our own run (resumed in this process): adopt it
                return
            now = time.time()
            hb = rec.get("heartbeat")
            stale = not isinstance(hb, (int, float)) or now - float(hb) > float(rec.get("ttl") or self.ttl)
            if _holder_dead(rec) or (break_lease and stale):
                try:
                    self.etag = self._swap(etag, expect=rec)
                    return
                except PreconditionFailed:
                    continue  # someone else broke it first: look again
            hint = ("; its heartbeat is stale: rerun with --break-lease to take it over" if stale else
                    "; wait for it to finish (--break-lease works only once its heartbeat is older than "
                    f"{rec.get('ttl') or self.ttl:.0f}s)")
            raise LeaseError(f"{self.url}: output is being written by {describe(rec, now)}{hint}")
        raise LeaseError(f"{self.url}: could not take the writer lease (it kept changing hands)")

    def _swap(self, etag: str | None, expect: dict[str, Any] | None = None) -> str | None:
        """Replace the lease record with ours (compare-and-swap on object stores)."""
        if expect is not None and etag is None:
            # local: move the stale record aside first; of several breakers exactly one rename wins
            aside = f"{self.path}.broken.{self.run_id}.{uuid.uuid4().hex[:6]}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                raise PreconditionFailed(self.path) from None
            try:
                with open(aside, "rb") as f:
                    moved = _parse(f.read())
                if moved != expect:  # renewed since we judged it stale: put it back, look again
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:
                        pass
                    raise PreconditionFailed(self.path)
            finally:
                if os.path.exists(aside):
                    os.unlink(aside)
            return create_exclusive(self.fs, self.path, json.dumps(self.record()).encode())
        return replace_if_match(self.fs, self.path, json.dumps(self.record()).encode(), etag)

    # -- holding it ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Write a fresh heartbeat; mark the lease lost if another run took it."""
        with self._mutex:
            if self.lost:
                return
            try:
                data, etag = read_with_tag(self.fs, self.path)
            except FileNotFoundError:
                self.lost = "the lease file was removed"
                return
            rec = _parse(data)
            if rec.get("run_id") != self.run_id:
                self.lost = f"taken over by {describe(rec)}"
                return
            try:
                self.etag = replace_if_match(self.fs, self.path, json.dumps(self.record()).encode(),
                                             etag or self.etag)
            except PreconditionFailed:
                self.lost = "changed by another writer during a heartbeat"

    def _beat(self) -> None:
        while not self._stop.wait(max(0.05, self.ttl / 4)):
            try:
                self.refresh()
            except Exception:  # a transient store error: the next beat tries again
                continue
            if self.lost:
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease:{self.url}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseError` if this run no longer holds the lease (call before a commit)."""
        if not self.lost:
            rec = read_holder(self.fs, self.root)
            if rec is None:
                self.lost = "the lease file was removed"
            elif rec.get("run_id") != self.run_id:
                self.lost = f"taken over by {describe(rec)}"
        if self.lost:
            raise LeaseError(f"{self.url}: run {self.run_id} lost its writer lease ({self.lost}); "
                             "nothing more is committed")

    def release(self) -> None:
        """Drop one hold; the last one stops the heartbeat and deletes the lease file."""
        with _LOCK:
            self.refs -= 1
            if self.refs > 0:
                return
            _HELD.pop((_proto(self.fs), self.path), None)
        self._stop.set()
        if self.lost:
            return
        rec = read_holder(self.fs, self.root)
        if rec is not None and rec.get("run_id") == self.run_id:
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass
            self.fs.invalidate_cache(self.root)


class LeaseHold:
    """One writer's hold on a :class:`Lease`; released explicitly or when the owner is collected."""

    def __init__(self, lease: Lease, owner: object):
        self.lease = lease
        self._fin = weakref.finalize(owner, lease.release)

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    def check(self) -> None:
        self.lease.check()

    def release(self) -> None:
        self._fin()  # runs lease.release at most once


def acquire(fs: fsspec.AbstractFileSystem, root: str, url: str, owner: object, *, run_id: str | None = None,
            break_lease: bool | None = None, ttl: float | None = None, purpose: str = "") -> LeaseHold:
    """Take (or re-enter) the writer lease of ``root`` for ``owner`` (a writer object).

    Raises:
        LeaseError: another live run holds it; the message names run id, host, pid, heartbeat age.
    """
    rid = run_id or current_run_id()
    key = (_proto(fs), join(root, LEASE))
    with _LOCK:
        lease = _HELD.get(key)
        if lease is not None and lease.run_id == rid and not lease.lost:
            lease.refs += 1
            return LeaseHold(lease, owner)
    lease = Lease(fs, root, url, rid, ttl or lease_ttl(), purpose)
    lease._take(break_requested() if break_lease is None else break_lease)
    with _LOCK:
        lease.refs = 1
        _HELD[key] = lease
    lease.start()
    return LeaseHold(lease, owner)


def verify_holder(fs: fsspec.AbstractFileSystem, root: str, url: str, run_id: str) -> None:
    """Raise :class:`LeaseError` unless run ``run_id`` holds ``root``'s lease (attached tasks)."""
    rec = read_holder(fs, root)
    if rec is None or rec.get("run_id") != run_id:
        who = describe(rec) if rec else "nobody (released or never taken)"
        raise LeaseError(f"{url}: task of run {run_id} refused: the output's writer lease is held by {who}")


__all__ = ["LEASE", "Lease", "LeaseError", "LeaseHold", "acquire", "current_run_id", "read_holder",
           "verify_holder", "describe"]
