"""DuckDB over a dataset: views ``samples`` (current metadata) and ``embeddings``.

Works for local paths and any fsspec URL: remote filesystems are registered with DuckDB
(no DuckDB extension downloads). Errors (unknown column, bad SQL) become one-line
:class:`QueryError` messages naming the problem.
"""
from __future__ import annotations

import re
from typing import Any

import duckdb
import pyarrow as pa

from curation.errors import CurationError
from curation.io.dataset import Dataset
from curation.io.fs import is_local


class QueryError(CurationError):
    """The SQL could not run against the dataset (names the column or syntax problem)."""


def _sql_list(urls: list[str]) -> str:
    return "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in urls) + "]"


def connect(ds: Dataset, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with ``samples`` (and ``embeddings`` when present) views."""
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET autoinstall_known_extensions=false; SET autoload_known_extensions=false;")
    if is_local(ds.fs):
        meta = [ds.fs._strip_protocol(u) if "://" in u else u for u in ds.meta_urls()]
        emb = ds.embedding_urls()
    else:
        con.register_filesystem(ds.fs)
        meta, emb = ds.meta_urls(), ds.embedding_urls()
    if meta:
        con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet({_sql_list(meta)}, union_by_name=true)")
    else:
        cols = ", ".join(f"NULL::VARCHAR AS {c}" for c in ds.columns) or "NULL AS uid"
        con.execute(f"CREATE VIEW samples AS SELECT {cols} WHERE false")
    if emb:
        # Parquet has no fixed-size list type, so DuckDB reads FLOAT[]; cast to FLOAT[d] so
        # array_cosine_similarity & co. work (the contract says FLOAT[d]).
        d = int((ds.embeddings or {}).get("dim") or 0)
        cast = (f" REPLACE (image_emb::FLOAT[{d}] AS image_emb, text_emb::FLOAT[{d}] AS text_emb)" if d else "")
        con.execute(f"CREATE VIEW embeddings AS SELECT *{cast} FROM read_parquet({_sql_list(emb)})")
    return con


def query(ds: Dataset | str, sql: str, *, storage_options: dict | None = None) -> pa.Table:
    """Run ``sql`` against the dataset's views and return an Arrow table."""
    if isinstance(ds, str):
        ds = Dataset(ds, storage_options)
    con = connect(ds)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.BinderException as e:
        raise QueryError(_binder_message(e, ds)) from None
    except duckdb.CatalogException as e:
        msg = str(e).splitlines()[0]
        if "embeddings" in sql and not ds.embeddings:
            msg = f"{ds.url} has no embeddings yet (run `curate score`); {msg}"
        raise QueryError(msg) from None
    except duckdb.ParserException as e:
        raise QueryError(f"SQL syntax error: {str(e).splitlines()[0]}") from None
    except duckdb.Error as e:
        raise QueryError(str(e).splitlines()[0]) from None
    finally:
        con.close()


def _binder_message(e: Exception, ds: Dataset) -> str:
    text = str(e).splitlines()[0]
    m = re.search(r'column "?([^"\s]+)"? not found', text, re.I) or re.search(r'Referenced column "([^"]+)"', text)
    if m:
        return f"unknown column {m.group(1)!r} in query; samples has: {', '.join(ds.columns)}"
    return text


def where_uids(ds: Dataset, predicate: str) -> list[str]:
    """uids of samples matching a DuckDB predicate over ``samples`` (used by loaders/filters)."""
    t = query(ds, f"SELECT uid FROM samples WHERE {predicate}")
    return t.column("uid").to_pylist()


def write_result(table: pa.Table, out: str, fmt: str) -> None:
    """Write a query result as csv, json (records) or parquet."""
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pq.write_table(table, out)
    elif fmt == "csv":
        pacsv.write_csv(table, out)
    elif fmt == "json":
        with open(out, "w") as f:
            json.dump(table.to_pylist(), f, default=_json_default, indent=1)
    else:
        raise QueryError(f"unknown --format {fmt!r}; use csv, json or parquet")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
