"""The selection index: which samples a stream reads, found by a DuckDB predicate.

Built once in the main process from the current metadata version (``Dataset.read_meta``
through fsspec, so any URL works and DuckDB needs no network extension). Only rows with
an image (``tar_offset`` not null) are selectable. Rows come out grouped by shard and
sorted by tar offset, which is the read order the epoch shuffle starts from.

Memory: the index keeps, per selected sample, only where it is: shard (int32), tar offset
(int64), member size (int32) and its row in the shard's metadata file (int32), 20 bytes.
The columns samples carry (``uid``, the caption, requested columns) are read at read time,
per batch, from the shard's metadata (a few shards' columns are cached per process, and a
shuffle block spans few shards). The predicate runs over groups of consecutive shards of
at most ``rows_per_query`` rows, reading only the columns it references plus the
positions, so building the index holds one group's columns at a time, however large the
dataset. (A predicate with a subquery sees the whole table, so it runs over all shards at
once, as it must.)
"""
from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.io import Dataset
from curation.io.fs import get_fs
from curation.io.query import QueryError, filter_relation, predicate_columns, sandboxed_connection

_POS_COLS = ("shard", "tar_offset", "tar_size")
ROWS_PER_QUERY = 1_000_000
CACHED_SHARDS = 8  # shards whose carried columns a process keeps (per source)


@dataclass
class SourceIndex:
    """Selected samples of one dataset: positions, and how to read the columns they carry.

    ``shard``/``offset``/``size``/``row`` are row-aligned numpy arrays (one entry per
    selected sample, in read order); ``row`` is the sample's row in its shard's metadata.
    """

    dataset: Dataset
    where: str | None
    shard: np.ndarray       # int32 per sample
    offset: np.ndarray      # int64 tar_offset
    size: np.ndarray        # int32 tar_size
    row: np.ndarray         # int32 row in the shard's metadata file
    carry: list[str]        # uid, the caption column and requested columns
    shard_fraction: dict[int, float]  # selected images / images, per shard
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)
    _own: Any = field(default=None, repr=False, compare=False)  # (pid, dataset) reading the columns

    def __len__(self) -> int:
        return len(self.shard)

    def __getstate__(self) -> dict[str, Any]:  # pickled into DataLoader workers: no cache, no lock
        d = dict(self.__dict__)
        d["_cache"], d["_lock"], d["_own"] = OrderedDict(), None, None
        return d

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache, self._lock = OrderedDict(), threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes the index holds per its arrays (what grows with the selection)."""
        return int(self.shard.nbytes + self.offset.nbytes + self.size.nbytes + self.row.nbytes)

    def _reader(self) -> Dataset:
        """The dataset with a filesystem of this process (fsspec async filesystems such as
        s3fs are not fork-safe, and DataLoader workers are forked)."""
        own = self._own
        if own is None or own[0] != os.getpid():  # first use in this process: fresh lock and cache too
            self._lock, self._cache = threading.Lock(), OrderedDict()
            ds = copy.copy(self.dataset)
            ds.fs, ds.root = get_fs(ds.url, ds.storage_options)
            own = self._own = (os.getpid(), ds)
        return own[1]

    def _shard_columns(self, sid: int) -> pa.Table:
        reader = self._reader()
        with self._lock:
            t = self._cache.get(sid)
            if t is not None:
                self._cache.move_to_end(sid)
                return t
        t = reader.read_meta(sid, columns=self.carry)
        with self._lock:
            self._cache[sid] = t
            while len(self._cache) > CACHED_SHARDS:
                self._cache.popitem(last=False)
        return t

    def rows(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """The carried columns of the samples at ``positions`` (indices into this index), in order."""
        positions = np.asarray(positions, dtype=np.int64)
        out: list[Any] = [None] * len(positions)
        shards = self.shard[positions]
        for sid in np.unique(shards):
            where = np.flatnonzero(shards == sid)
            t = self._shard_columns(int(sid)).take(pa.array(self.row[positions[where]]))
            for w, r in zip(where, t.to_pylist()):
                out[w] = r
        return out

    def uid(self, position: int) -> str:
        return str(self.rows(np.array([position]))[0]["uid"])

    @property
    def table(self) -> pa.Table:
        """The carried columns of every selected sample, in read order (reads them all: for
        callers that want the whole list; streaming reads :meth:`rows` per batch)."""
        if not len(self):
            ids = self.dataset.shard_ids
            if not ids:
                return pa.table({c: pa.array([], pa.string()) for c in self.carry})
            return self.dataset.read_meta(ids[0], columns=self.carry).slice(0, 0)
        bounds = np.flatnonzero(np.diff(self.shard)) + 1
        parts = [self._reader().read_meta(int(self.shard[s]), columns=self.carry).take(pa.array(self.row[s:e]))
                 for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(self)])]
        return pa.concat_tables(parts, promote_options="permissive")


def build_index(ds: Dataset, where: str | None, columns: list[str], caption_column: str,
                rows_per_query: int | None = None) -> SourceIndex:
    """Run ``where`` over ``ds``'s metadata and return the selected samples in read order.

    Raises:
        ConfigError: the predicate is not valid SQL, or names an unknown column; or a
            requested column does not exist. The message names the dataset and predicate.
    """
    missing = [c for c in [caption_column, *columns] if c not in ds.columns]
    if missing:
        raise ConfigError(f"stream columns: {', '.join(map(repr, missing))} not in {ds.url} "
                          f"(version {ds.version} has {', '.join(ds.columns)})")
    carry = list(dict.fromkeys(["uid", caption_column, *columns]))
    try:
        used = predicate_columns(where, ds.columns)
    except QueryError as e:
        raise ConfigError(f"stream where {where!r} on {ds.url}: {e}") from None
    # only the columns the predicate needs, plus the positions (None: the predicate reads all)
    needed = None if used is None else list(dict.fromkeys([*_POS_COLS, *used]))
    row_col = "__curation_row"
    while row_col in ds.columns:
        row_col += "_"
    limit = ROWS_PER_QUERY if rows_per_query is None else max(1, rows_per_query)
    out: dict[str, list[np.ndarray]] = {"shard": [], "tar_offset": [], "tar_size": [], row_col: []}
    con = None
    try:
        groups = [sorted(ds.shard_ids)] if _has_subquery(where) else _shard_groups(ds, limit)
        for ids in groups:
            tables = []
            for sid in ids:
                t = ds.read_meta(sid, columns=needed)
                tables.append(t.append_column(row_col, pa.array(np.arange(t.num_rows, dtype=np.int32))))
            if not tables:
                continue
            meta = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
            # the predicate is untrusted (loader/training config): sandboxed, applied as a relation filter
            if con is None:
                con = sandboxed_connection(tables={"samples": meta})
            else:
                con.register("samples", meta)
            rel = filter_relation(con, con.table("samples").filter("tar_offset IS NOT NULL"), where)
            res = rel.order("shard, tar_offset").project(", ".join(_q(c) for c in out)).to_arrow_table()
            for c, dtype in zip(out, (np.int32, np.int64, np.int32, np.int32)):  # compact copies, per group
                out[c].append(res.column(c).to_numpy(zero_copy_only=False).astype(dtype, copy=True))
            del meta, tables, res
    except (duckdb.Error, QueryError) as e:
        msg = str(e).strip().splitlines()[0]
        raise ConfigError(f"stream where {where!r} on {ds.url}: {msg}") from None
    finally:
        if con is not None:
            con.close()

    def cat(c: str, dtype) -> np.ndarray:
        parts = out.pop(c)
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    shard, offset = cat("shard", np.int32), cat("tar_offset", np.int64)
    size, row = cat("tar_size", np.int32), cat(row_col, np.int32)
    pa.default_memory_pool().release_unused()  # the groups' Arrow buffers: back to the OS, not kept
    images = {int(s["id"]): max(1, int(s["num_images"])) for s in ds.shards}
    fraction: dict[int, float] = {}
    if len(shard):
        ids, counts = np.unique(shard, return_counts=True)
        fraction = {int(i): float(c) / images.get(int(i), 1) for i, c in zip(ids, counts)}
    return SourceIndex(ds, where, shard, offset, size, row, carry, fraction)


def _shard_groups(ds: Dataset, limit: int) -> list[list[int]]:
    """Consecutive shard ids in groups of at most ``limit`` rows (a bigger shard: alone)."""
    groups: list[list[int]] = []
    acc = 0
    for s in sorted(ds.shards, key=lambda s: int(s["id"])):
        n = int(s.get("num_samples", 0))
        if not groups or (acc + n > limit and groups[-1]):
            groups.append([])
            acc = 0
        groups[-1].append(int(s["id"]))
        acc += n
    return groups


def _has_subquery(where: str | None) -> bool:
    """Does the predicate hold a subquery (which must see every shard's rows at once)?"""
    if where is None or not where.strip():
        return False
    import json

    from curation.io.query import _serialize, check_predicate

    tree = _serialize(f"SELECT 1 FROM samples WHERE ({check_predicate(where)}\n)")
    return '"SUBQUERY"' in json.dumps(tree)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
