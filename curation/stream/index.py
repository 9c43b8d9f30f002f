"""The selection index: which samples a stream reads, found by a DuckDB predicate.

Built once in the main process from the current metadata version (``Dataset.read_meta``
through fsspec, so any URL works and DuckDB needs no network extension), reading only the
columns it needs: positions, the carried columns and those the predicate references. Only rows with
an image (``tar_offset`` not null) are selectable. Rows come out grouped by shard and
sorted by tar offset, which is the read order the epoch shuffle starts from.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.io import Dataset
from curation.io.query import QueryError, filter_relation, predicate_columns, sandboxed_connection

_POS_COLS = ("shard", "tar_offset", "tar_size")


@dataclass
class SourceIndex:
    """Selected samples of one dataset: positions plus the columns samples carry."""

    dataset: Dataset
    where: str | None
    shard: np.ndarray       # int64 per sample
    offset: np.ndarray      # int64 tar_offset
    size: np.ndarray        # int64 tar_size
    table: pa.Table         # uid, caption column and requested columns, row-aligned
    shard_fraction: dict[int, float]  # selected images / images, per shard

    def __len__(self) -> int:
        return len(self.shard)


def build_index(ds: Dataset, where: str | None, columns: list[str], caption_column: str) -> SourceIndex:
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
    # only the columns the index needs: positions, what samples carry, what the predicate reads
    needed = None if used is None else list(dict.fromkeys([*_POS_COLS, *carry, *used]))
    meta = ds.read_meta(columns=needed)
    cols = ", ".join(_q(c) for c in dict.fromkeys([*_POS_COLS, *carry]))
    # the predicate is untrusted (loader/training config): sandboxed, applied as a relation filter
    con = sandboxed_connection(tables={"samples": meta})
    try:
        rel = filter_relation(con, con.table("samples").filter("tar_offset IS NOT NULL"), where)
        result = rel.order("shard, tar_offset").project(cols).to_arrow_table()
    except (duckdb.Error, QueryError) as e:
        msg = str(e).strip().splitlines()[0]
        raise ConfigError(f"stream where {where!r} on {ds.url}: {msg}") from None
    finally:
        con.close()
    shard = result.column("shard").to_numpy(zero_copy_only=False).astype(np.int64)
    offset = result.column("tar_offset").to_numpy(zero_copy_only=False).astype(np.int64)
    size = result.column("tar_size").to_numpy(zero_copy_only=False).astype(np.int64)
    images = {int(s["id"]): max(1, int(s["num_images"])) for s in ds.shards}
    fraction: dict[int, float] = {}
    if len(shard):
        ids, counts = np.unique(shard, return_counts=True)
        fraction = {int(i): float(c) / images.get(int(i), 1) for i, c in zip(ids, counts)}
    return SourceIndex(ds, where, shard, offset, size, result.select(carry), fraction)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
