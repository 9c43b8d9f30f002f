"""Load a slice (dataset + ``where``) into a TensorCache.

Two kinds of source: a Parquet file/glob with an ``image`` bytes column (what
``curation.synth`` writes: ``seed.parquet``/``eval.parquet``), filtered with DuckDB; or a
curated dataset in the project format, whose ``where`` runs over its metadata and whose
images are read from its tars (only rows with an image are used).
"""
from __future__ import annotations

from typing import Any, Callable

import duckdb

from curation.errors import ConfigError, CurationError
from curation.train.data import TensorCache, build_cache


def _is_parquet(url: str) -> bool:
    return url.rstrip("/").endswith(".parquet")


def read_parquet_rows(url: str, where: str | None) -> Any:
    """Rows of a Parquet file matching ``where`` as a pyarrow Table (DuckDB)."""
    con = duckdb.connect()
    con.execute("SET threads TO 1")
    sql = f"SELECT * FROM read_parquet('{url.replace(chr(39), chr(39) * 2)}')"
    if where:
        sql += f" WHERE {where}"
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise ConfigError(f"{url}: cannot select where {where!r}: {str(e).splitlines()[0]}") from None


def read_dataset_rows(url: str, where: str | None, storage_options: dict | None = None) -> list[dict]:
    """Samples with images of a curated dataset, restricted to ``where`` (over its metadata)."""
    from curation.io import Dataset
    from curation.io.query import where_uids

    ds = Dataset(url, storage_options=storage_options)
    keep = set(where_uids(ds, where)) if where else None
    return [s for s in ds.iter_samples() if keep is None or s["uid"] in keep]


def load_slice(url: str, where: str | None, preprocess: Callable, tokenizer: Callable,
               storage_options: dict | None = None) -> TensorCache:
    """Decode one slice into tensors; raises ConfigError when it selects nothing."""
    try:
        rows = read_parquet_rows(url, where) if _is_parquet(url) else read_dataset_rows(url, where, storage_options)
    except CurationError:
        raise
    except FileNotFoundError as e:
        raise ConfigError(f"{url}: not found ({e})") from None
    n = rows.num_rows if hasattr(rows, "num_rows") else len(rows)
    if n == 0:
        raise ConfigError(f"{url}: where {where!r} selects no samples with images")
    return build_cache(rows, preprocess, tokenizer)
