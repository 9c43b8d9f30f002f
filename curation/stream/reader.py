"""Reading selected members' bytes: memory-mapped local tars, cached or ranged remote tars.

* Local shards are memory-mapped; the OS pages them in, and a slice is one copy.
* A remote shard whose selected fraction is at least ``whole_shard_fraction`` is
  downloaded whole (one sequential GET) into the :class:`ShardCache`, then mapped.
* Otherwise only the selected ranges are fetched; ranges of one shard closer than
  ``coalesce_gap`` bytes are merged into one request (``fs.cat_ranges``).
"""
from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict

import numpy as np

from curation.io.fs import get_fs, is_local
from curation.stream.cache import ShardCache
from curation.stream.index import SourceIndex


class SourceReader:
    """Reads member bytes of one source (one dataset) by sample position.

    Thread-safe: the read-ahead pool calls :meth:`read` concurrently.
    """

    def __init__(self, index: SourceIndex, cache: ShardCache | None, *, whole_shard_fraction: float = 0.5,
                 coalesce_gap: int = 64 * 1024, max_open: int = 64):
        self.index = index
        self.ds = index.dataset
        # a filesystem of this process: fsspec async filesystems (s3fs) are not fork-safe,
        # and readers are built lazily inside each DataLoader worker
        self.fs = get_fs(self.ds.url, self.ds.storage_options)[0]
        self.local = is_local(self.fs)
        self.cache = cache
        self.whole_shard_fraction = whole_shard_fraction
        self.coalesce_gap = coalesce_gap
        self._maps: OrderedDict[int, mmap.mmap] = OrderedDict()
        self._max_open = max_open
        self._lock = threading.Lock()
        self._tar_bytes = {int(s["id"]): int(s["tar_bytes"]) for s in self.ds.shards}
        self.stats = {"range_requests": 0, "range_bytes": 0, "whole_shards": 0}

    def read(self, positions: np.ndarray) -> list[bytes]:
        """Bytes of the members at ``positions`` (indices into this source's index), in order."""
        out: list[bytes | None] = [None] * len(positions)
        shards = self.index.shard[positions]
        for sid in np.unique(shards):
            where = np.flatnonzero(shards == sid)
            pos = positions[where]
            mm = self._mapped(int(sid))
            if mm is not None:
                for w, p in zip(where, pos):
                    o = int(self.index.offset[p])
                    out[w] = mm[o:o + int(self.index.size[p])]
            else:
                for w, data in zip(where, self._read_ranges(int(sid), pos)):
                    out[w] = data
        return out  # type: ignore[return-value]

    def _mapped(self, sid: int) -> mmap.mmap | None:
        with self._lock:
            mm = self._maps.get(sid)
            if mm is not None:
                self._maps.move_to_end(sid)
                return mm
        mm = self._map_local(sid)
        if mm is None:
            return None
        with self._lock:
            self._maps[sid] = mm
            while len(self._maps) > self._max_open:
                # no close(): a read-ahead thread may still slice it; GC unmaps it
                self._maps.popitem(last=False)
        return mm

    def _map_local(self, sid: int) -> mmap.mmap | None:
        """The shard's tar mapped from local disk: the dataset's own file when local, else the
        cached copy (None: read ranges instead). The cached copy is mapped under the cache's
        lock, so a concurrent eviction cannot unlink it first; once mapped it stays readable."""
        if self.local:
            return _map_file(self.ds.tar_path(sid))
        if self.cache is None or self.index.shard_fraction.get(sid, 0.0) < self.whole_shard_fraction:
            return None
        remote = self.ds.tar_path(sid)
        url = self.ds.full_url(f"shards/{sid:06d}.tar")

        def download(local: str) -> None:
            self.fs.get_file(remote, local)

        mm = self.cache.fetch(url, self._tar_bytes.get(sid, 0), download, open_with=_map_file)
        if mm is not None:
            self.stats["whole_shards"] += 1
        return mm

    def _read_ranges(self, sid: int, pos: np.ndarray) -> list[bytes]:
        """Fetch members of one remote shard, merging nearby ranges into one request."""
        offs, sizes = self.index.offset[pos], self.index.size[pos]
        order = np.argsort(offs, kind="stable")
        groups: list[list[int]] = []
        end = -1
        for i in order:
            if groups and offs[i] <= end + self.coalesce_gap:
                groups[-1].append(int(i))
                end = max(end, int(offs[i] + sizes[i]))
            else:
                groups.append([int(i)])
                end = int(offs[i] + sizes[i])
        starts = [int(offs[g[0]]) for g in groups]
        ends = [max(int(offs[i] + sizes[i]) for i in g) for g in groups]
        path = self.ds.tar_path(sid)
        blobs = self.fs.cat_ranges([path] * len(groups), starts, ends)
        self.stats["range_requests"] += len(groups)
        out: list[bytes] = [b""] * len(pos)
        for g, s, blob in zip(groups, starts, blobs):
            if isinstance(blob, Exception):
                raise blob
            self.stats["range_bytes"] += len(blob)
            for i in g:
                a = int(offs[i]) - s
                out[i] = bytes(blob[a:a + int(sizes[i])])
        return out

    def close(self) -> None:
        with self._lock:
            for mm in self._maps.values():
                mm.close()
            self._maps.clear()


def default_cache_dir() -> str:
    """Per-user cache folder for remote shards (``$CURATION_CACHE`` overrides)."""
    base = os.environ.get("CURATION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "curation", "stream")
    return base


def _map_file(path: str) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
