"""The distributed dedup's scratch space, row positions, partition hashes and keep keys.

Everything the dedup tasks exchange goes through files under one work folder of the new
metadata version (``<root>/meta/v<N>/_work/``): tasks write their outputs atomically and
deterministically (a task retried after a lost node rewrites the same bytes), and readers
only list finished files (temps are dot-files ending in ``.tmp``).

Identifiers:

* ``pos``: a row's position, ``(shard index << 32) | row`` (shard index = place in
  ``ds.shard_ids``), so ordering by ``pos`` is dataset order;
* keep key: a string whose byte order *is* the keep policy of :mod:`curation.dedup.groups`
  (highest ``clip_score`` first, null scores last, then lowest ``uid``), so ``min(key)``
  over a group is its kept sample and the uid is ``key[16:]``.
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.fs import get_fs, join
from curation.io.writer import write_parquet

ROW_BITS = 32
KEY_PREFIX = 16  # hex chars of the score part of a keep key


@dataclass
class Work:
    """A picklable handle on the work folder (``url`` is the folder, as a URL or local path)."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fs = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url, self.storage_options, self._fs = state["url"], state["storage_options"], None

    @property
    def fs(self):
        if self._fs is None:
            self._fs, self._path = get_fs(self.url, self.storage_options)
        return self._fs

    def path(self, *parts: str) -> str:
        self.fs  # noqa: B018  (resolves _path)
        return join(self._path, *parts)

    def write(self, rel: str, table: pa.Table) -> None:
        write_parquet(self.fs, self.path(rel), table)

    def read(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f, columns=columns)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def files(self, rel_dir: str) -> list[str]:
        """Finished ``.parquet`` files directly under ``rel_dir`` (relative paths, sorted)."""
        d = self.path(rel_dir)
        if not self.fs.exists(d):
            return []
        names = sorted(posixpath.basename(p) for p in self.fs.ls(d, detail=False))
        return [join(rel_dir, n) for n in names if n.endswith(".parquet") and not n.startswith(".")]

    def read_dir(self, rel_dir: str, schema: pa.Schema) -> pa.Table:
        """All finished files of ``rel_dir`` concatenated in file-name order (empty with ``schema``)."""
        tables = [self.read(f) for f in self.files(rel_dir)]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return schema.empty_table()
        return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])

    def write_bytes(self, rel: str, data: bytes) -> None:
        from curation.io.fs import atomic_write_bytes

        atomic_write_bytes(self.fs, self.path(rel), data)

    def read_bytes(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        with self.fs.open(self.path(rel), "rb") as f:
            if start:
                f.seek(start)
            data = f.read() if end is None else f.read(end - (start or 0))
        assert isinstance(data, bytes)
        return data

    def clear(self) -> None:
        if self.fs.exists(self.path()):
            self.fs.rm(self.path(), recursive=True)


# -- decision records --------------------------------------------------------------------
DECISION = pa.schema([("pos", pa.int64()), ("ppos", pa.int64()), ("puid", pa.string()), ("reason", pa.string())])


def decisions(pos, ppos, puid, reason: str) -> pa.Table:
    pos = np.asarray(pos, dtype=np.int64)
    return pa.table({"pos": pa.array(pos, pa.int64()),
                     "ppos": pa.array(np.asarray(ppos, dtype=np.int64), pa.int64()) if ppos is not None
                     else pa.nulls(len(pos), pa.int64()),
                     "puid": pa.array(puid, pa.string()) if puid is not None else pa.nulls(len(pos), pa.string()),
                     "reason": pa.array([reason] * len(pos), pa.string())}, schema=DECISION)


def group_of(pos: np.ndarray, group_starts: list[int]) -> np.ndarray:
    """Group index of each position (groups are runs of shard indices starting at ``group_starts``)."""
    return np.searchsorted(np.asarray(group_starts, dtype=np.int64),
                           np.asarray(pos, dtype=np.int64) >> ROW_BITS, side="right") - 1


def split_by(table: pa.Table, part: np.ndarray, n: int) -> dict[int, pa.Table]:
    """``{p: rows of table whose part == p}`` for the non-empty parts, rows in their order."""
    out: dict[int, pa.Table] = {}
    if not table.num_rows:
        return out
    part = np.asarray(part, dtype=np.int64)
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=n)
    starts = np.r_[0, np.cumsum(counts)]
    sorted_t = table.take(pa.array(order))
    for p in np.flatnonzero(counts):
        out[int(p)] = sorted_t.slice(int(starts[p]), int(counts[p]))
    return out


# -- hashing -----------------------------------------------------------------------------
def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fixed, well-spread uint64 -> uint64 map."""
    z = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uid_hash(uids: list[str]) -> np.ndarray:
    """A stable 64-bit hash per uid (blake2b), independent of process and platform."""
    return np.array([int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little")
                     for u in uids], dtype=np.uint64)


def sample_keys(uid_hashes: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """The k-means sampling key of each item (see :func:`curation.dedup.semantic.sample_mask`)."""
    s = mix64(np.array([(seed & 0xFFFFFFFF) * 1_000_003 + salt], dtype=np.uint64))[0]
    return mix64(np.asarray(uid_hashes, dtype=np.uint64) ^ s)


def partition_of(values: np.ndarray, n: int) -> np.ndarray:
    """Partition (0..n-1) of uint64 values, after mixing."""
    if n <= 1:
        return np.zeros(len(values), dtype=np.int64)
    return (mix64(values) % np.uint64(n)).astype(np.int64)


def _prefix(s: str) -> int:
    try:
        return int(s[:15], 16)
    except ValueError:  # not a hex digest: any stable hash of the value groups equal values
        return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=7).digest(), "little")


def sha_partition(sha: list[str], n: int) -> np.ndarray:
    """Partition of each sha256 hex digest by its 60-bit prefix (equal values, same partition)."""
    if n <= 1:
        return np.zeros(len(sha), dtype=np.int64)
    return (np.array([_prefix(s) for s in sha], dtype=np.uint64) % np.uint64(n)).astype(np.int64)


def keep_keys(uids: list[str], scores: np.ndarray | None) -> list[str]:
    """Keep key per item (module docstring): ``min`` of keys == the policy's kept item."""
    n = len(uids)
    s = np.full(n, np.nan) if scores is None else np.asarray(scores, dtype=np.float64)
    neg = np.where(np.isnan(s), np.inf, -s) + 0.0  # + 0.0 turns -0.0 into 0.0 (they tie, as in keep_rank)
    bits = neg.view(np.uint64)
    ordered = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63))
    return [f"{int(o):016x}{u}" for o, u in zip(ordered, uids)]


def key_uid(key: str) -> str:
    return key[KEY_PREFIX:]
