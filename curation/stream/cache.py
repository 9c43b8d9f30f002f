"""A local, byte-bounded LRU cache of remote shard tars, shared by the processes of a node.

Guarantee: the bytes under the cache directory (complete files plus the declared sizes of
downloads in progress) never exceed ``limit_bytes``. Every change happens under an
``fcntl`` lock on ``<dir>/.lock``, so DataLoader workers and ranks on one node can share
one directory. A download is written to ``.<name>.<size>.part`` (its size is reserved up
front, encoded in the name) and renamed into place when complete; a reader never sees a
partial shard. Least recently used files are evicted first; a file another process still
has memory-mapped stays readable after eviction (POSIX unlink semantics).

Entries are keyed by ``(url, size, etag)``, not the URL alone: a tar rewritten in place (a
``--retry-failed`` that adds members, a re-uploaded object) is a different entry, never a
stale hit. A download holds an ``flock`` on its ``.part`` file for as long as it runs, so a
reservation whose process died (``kill -9``, OOM) is found unlocked and reaped by the next
process that needs room: dead workers never keep bytes reserved.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from typing import Any, Callable, Iterator

_LOCK = ".lock"


class ShardCache:
    """Whole-shard cache on local disk.

    Args:
        directory: cache folder (created). Shared safely between processes.
        limit_bytes: bound on the folder's contents.
    """

    def __init__(self, directory: str, limit_bytes: int):
        self.directory = directory
        self.limit_bytes = int(limit_bytes)
        os.makedirs(directory, exist_ok=True)
        self._thread_lock = threading.Lock()
        self.stats = {"hits": 0, "downloads": 0, "evictions": 0, "reaped": 0, "peak_bytes": 0}

    @staticmethod
    def name_for(url: str, size: int, etag: str | None = None) -> str:
        """File name for one version of a remote tar (stable across processes)."""
        key = f"{url}\0{int(size)}\0{etag or ''}"
        return hashlib.sha256(key.encode()).hexdigest()[:24] + ".tar"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(os.path.join(self.directory, _LOCK), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _entries(self) -> tuple[list[tuple[float, int, str]], int]:
        """(mtime, size, path) of complete files and the total incl. reserved parts."""
        files, used = [], 0
        for e in os.scandir(self.directory):
            if e.name == _LOCK:
                continue
            if e.name.endswith(".part"):
                if _owner_alive(e.path):
                    used += _declared(e.name)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                    self.stats["reaped"] += 1
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, e.path))
            used += st.st_size
        return files, used

    def used_bytes(self) -> int:
        """Bytes the cache holds now (complete files plus reserved downloads)."""
        with self._locked():
            return self._entries()[1]

    def get(self, url: str, size: int, etag: str | None = None) -> str | None:
        """Local path of a cached shard of that size/ETag (touched as recently used), or None."""
        path = os.path.join(self.directory, self.name_for(url, size, etag))
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        self.stats["hits"] += 1
        return path

    def fetch(self, url: str, size: int, download, open_with: Callable[[str], Any] | None = None,
              etag: str | None = None) -> Any:
        """Ensure ``url`` (of ``size`` bytes, ``etag`` if known) is cached, calling
        ``download(local_part_path)`` if needed.

        Returns the local path, or None when ``size`` cannot fit even after evicting
        everything evictable (the caller then reads ranges directly). With ``open_with``,
        returns ``open_with(path)`` instead, called under the cache lock: another thread or
        process cannot evict the file between the fetch and the open (opening a path after
        ``fetch`` returned it races with eviction).
        """
        name = self.name_for(url, size, etag)
        final = os.path.join(self.directory, name)
        part = os.path.join(self.directory, f".{name}.{os.getpid()}.{threading.get_ident()}.{int(size)}.part")
        use = open_with or (lambda path: path)
        with self._locked():
            if os.path.exists(final):
                os.utime(final)
                self.stats["hits"] += 1
                return use(final)
            if not self._reserve(int(size)):
                return None
            # created and locked under the cache lock, so no reaper sees it unlocked
            hold = open(part, "wb")
            fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            download(part)
            actual = os.path.getsize(part)
            if actual != size:
                raise OSError(f"{url}: downloaded {actual} bytes, manifest says {size}")
            with self._locked():
                os.replace(part, final)
                self.stats["downloads"] += 1
                return use(final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
            hold.close()

    def _reserve(self, size: int) -> bool:
        """Evict LRU files until ``size`` more bytes fit (caller holds the lock)."""
        if size > self.limit_bytes:
            return False
        files, used = self._entries()
        for _, fsize, path in sorted(files):
            if used + size <= self.limit_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                used -= fsize
                self.stats["evictions"] += 1
        if used + size > self.limit_bytes:
            return False
        self.stats["peak_bytes"] = max(self.stats["peak_bytes"], used + size)
        return True


def _owner_alive(part_path: str) -> bool:
    """Whether the process that reserved ``part_path`` still holds its lock (caller holds the
    cache lock, so no new reservation is being created meanwhile)."""
    try:
        with open(part_path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return True  # finished meanwhile: it is counted as the file it became


def _declared(part_name: str) -> int:
    try:
        return int(part_name.rsplit(".", 2)[-2])
    except (ValueError, IndexError):
        return 0
