"""DuckDB over a dataset: views ``samples`` (current metadata) and ``embeddings``.

Two kinds of connection, by who wrote the SQL:

- :func:`connect` / :func:`query`: **full access**, for the user's own interactive
  ``curate query`` (and code paths whose SQL is written by this package). Remote
  filesystems are registered with DuckDB; no DuckDB extension is downloaded or loaded.
- :func:`sandboxed_connection` + :func:`filter_relation` (or :func:`select`): for every
  predicate that comes from somewhere else - ``filter --where``, ``reshard --where``,
  ``StreamingDataset(where=...)``, training sources, pipeline YAML. Guarantees:

  * exactly one expression: the predicate is parsed by DuckDB's parser (one statement,
    a ``SELECT``), table functions (``read_text``, ``glob``, ``read_parquet``, ...) and
    tables other than the connection's own views are rejected, and it is applied as a
    relation filter (``DuckDBPyRelation.filter``), never pasted into a statement;
  * the connection runs with ``enable_external_access=false``: file access only to the
    dataset's own ``meta/``/``emb/`` folders (``allowed_directories``), no ``COPY``,
    ``ATTACH``, ``INSTALL``/``LOAD``, no ``getenv``; extension autoload/autoinstall off;
    ``lock_configuration=true``, so nothing can switch these back.

  A rejected predicate raises :class:`QueryError`, one line naming what is wrong, before
  anything is read.

Column names are data (a manifest lists them), so every identifier built here is quoted.
"""
from __future__ import annotations

import json
import os
import re
import threading
from typing import Any, Iterable, Sequence

import duckdb
import pyarrow as pa

from curation.errors import CurationError
from curation.io.dataset import Dataset
from curation.io.fs import is_local


class QueryError(CurationError):
    """The SQL could not run against the dataset (names the column or syntax problem)."""


def quote_ident(name: str) -> str:
    """``name`` as a DuckDB identifier (``"a""b"``): safe for any column name."""
    return '"' + str(name).replace('"', '""') + '"'


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_list(urls: list[str]) -> str:
    return "[" + ", ".join(_sql_str(u) for u in urls) + "]"


_BASE_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _new_connection(threads: int | None) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={**_BASE_CONFIG, **({"threads": threads} if threads else {})})


def _file_args(ds: Dataset, con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    if is_local(ds.fs):
        meta = [str(ds.fs._strip_protocol(u)) if "://" in u else u for u in ds.meta_urls()]
        emb = [str(ds.fs._strip_protocol(u)) if "://" in u else u for u in ds.embedding_urls()]
    else:
        con.register_filesystem(ds.fs)
        meta, emb = ds.meta_urls(), ds.embedding_urls()
    return meta, emb


def _create_views(con: duckdb.DuckDBPyConnection, ds: Dataset) -> list[str]:
    """Create ``samples`` (and ``embeddings``) views; return the directories they read."""
    meta, emb = _file_args(ds, con)
    if meta:
        con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet({_sql_list(meta)}, union_by_name=true)")
    else:
        cols = ", ".join(f"NULL::VARCHAR AS {quote_ident(c)}" for c in ds.columns) or "NULL AS uid"
        con.execute(f"CREATE VIEW samples AS SELECT {cols} WHERE false")
    if emb:
        # Parquet has no fixed-size list type, so DuckDB reads FLOAT[]; cast to FLOAT[d] so
        # array_cosine_similarity & co. work (the contract says FLOAT[d]).
        d = int((ds.embeddings or {}).get("dim") or 0)
        cast = (f" REPLACE (image_emb::FLOAT[{d}] AS image_emb, text_emb::FLOAT[{d}] AS text_emb)" if d else "")
        con.execute(f"CREATE VIEW embeddings AS SELECT *{cast} FROM read_parquet({_sql_list(emb)})")
    return sorted({u.rsplit("/", 1)[0] + "/" for u in meta + emb})


def connect(ds: Dataset, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A full-access DuckDB connection with ``samples`` (and ``embeddings`` when present) views.

    Only for SQL the user typed into ``curate query`` or SQL this package writes itself;
    anything else goes through :func:`sandboxed_connection`.
    """
    con = _new_connection(threads)
    _create_views(con, ds)
    return con


def lock_down(con: duckdb.DuckDBPyConnection, *, allowed_directories: Iterable[str] = (),
              allowed_paths: Iterable[str] = ()) -> duckdb.DuckDBPyConnection:
    """Turn off external access (except the allowed files) and lock the configuration."""
    dirs, paths = list(allowed_directories), list(allowed_paths)
    if dirs:
        con.execute(f"SET allowed_directories = {_sql_list(dirs)}")
    if paths:
        con.execute(f"SET allowed_paths = {_sql_list(paths)}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def sandboxed_connection(ds: Dataset | None = None, *, tables: dict[str, Any] | None = None,
                         parquet: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A locked-down connection for untrusted predicates (see the module docstring).

    Args:
        ds: give it views ``samples``/``embeddings`` over this dataset; DuckDB may read only
            the dataset's ``meta/`` and ``emb/`` folders.
        tables: Arrow tables (or anything DuckDB can scan from Python) to register by name;
            they need no file access at all.
        parquet: a local Parquet file or glob to expose as ``samples``; only it is readable.
        threads: DuckDB threads (default: DuckDB's).
    """
    con = _new_connection(threads)
    try:
        dirs: list[str] = []
        paths: list[str] = []
        if ds is not None:
            dirs += _create_views(con, ds)
        for name, obj in (tables or {}).items():
            con.register(name, obj)
        if parquet is not None:
            parquet = parquet if "://" in parquet else os.path.abspath(parquet)
            con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet({_sql_str(parquet)}, union_by_name=true)")
            if any(c in parquet for c in "*?["):
                head = re.split(r"[*?\[]", parquet, maxsplit=1)[0]
                dirs.append(head if head.endswith("/") else head.rsplit("/", 1)[0] + "/")
            else:
                paths.append(parquet)
        return lock_down(con, allowed_directories=dirs, allowed_paths=paths)
    except BaseException:
        con.close()
        raise


# -- predicates -----------------------------------------------------------------------
def _walk(node: Any, refs: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            refs.append(("function", str(fn.get("function_name") or "?")))
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name") or "")
            if node.get("schema_name") or node.get("catalog_name"):
                name = ".".join(str(x) for x in (node.get("catalog_name"), node.get("schema_name"), name) if x)
            refs.append(("table", name))
        for v in node.values():
            _walk(v, refs)
    elif isinstance(node, list):
        for v in node:
            _walk(v, refs)


_PARSER: duckdb.DuckDBPyConnection | None = None
_PARSER_LOCK = threading.Lock()


def _serialize(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql`` as JSON (``json_serialize_sql`` parses, never executes),
    on one locked-down connection shared by the process (guarded: connections are not thread-safe)."""
    global _PARSER
    with _PARSER_LOCK:
        if _PARSER is None:
            _PARSER = lock_down(_new_connection(1))
        row = _PARSER.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        assert row is not None  # a scalar SELECT always returns one row
        return json.loads(row[0])


def check_predicate(predicate: str, tables: Sequence[str] = ("samples",)) -> str:
    """Validate an untrusted predicate: exactly one expression over ``tables``.

    Returns the predicate stripped. Raises :class:`QueryError` (one line) when it is empty,
    is more than one statement, does not parse, or reads anything but ``tables``: table
    functions (``read_text``, ``glob``, ``read_parquet``, ...), files named as tables
    (``FROM '/etc/passwd'``) and other tables are all refused. Subqueries over ``tables``
    are allowed.
    """
    if not isinstance(predicate, str) or not predicate.strip():
        raise QueryError("predicate is empty")
    pred = predicate.strip()
    if "\0" in pred:
        raise QueryError("predicate contains a NUL character")
    probe = f"SELECT * FROM samples WHERE ({pred}\n)"
    try:
        statements = duckdb.extract_statements(probe)
    except duckdb.Error as e:
        raise QueryError(f"predicate does not parse: {_first_line(e)}") from None
    if len(statements) != 1:
        raise QueryError(f"predicate must be one expression, not {len(statements)} statements")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"predicate must be one expression, got a {statements[0].type.name} statement")
    try:
        tree = _serialize(probe)
    except duckdb.Error as e:  # pragma: no cover - json is built into DuckDB's Python wheels
        raise QueryError(f"predicate cannot be checked: {_first_line(e)}") from None
    if tree.get("error"):
        raise QueryError(f"predicate does not parse: {tree.get('error_message')}")
    if len(tree.get("statements") or []) != 1:
        raise QueryError("predicate must be one expression")
    refs: list[tuple[str, str]] = []
    _walk(tree["statements"][0], refs)
    allowed = set(tables)
    for kind, name in refs:
        if kind == "function":
            raise QueryError(f"predicate may not call table function {name}(): predicates read only "
                             f"{', '.join(sorted(allowed))}")
        if name not in allowed:
            raise QueryError(f"predicate may not read {name!r}: predicates read only {', '.join(sorted(allowed))}")
    return pred


def filter_relation(con: duckdb.DuckDBPyConnection, table: str | duckdb.DuckDBPyRelation, predicate: str | None,
                    *, columns: Sequence[str] | None = None) -> duckdb.DuckDBPyRelation:
    """``table`` (a view name or a relation) filtered by an untrusted ``predicate``.

    The predicate is checked with :func:`check_predicate` (against the connection's own
    tables and views) and applied as a relation filter; ``columns`` (quoted) select the
    output. ``None`` or a blank predicate selects everything.
    """
    rel = con.table(table) if isinstance(table, str) else table
    if predicate is not None and predicate.strip():
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        rel = rel.filter(check_predicate(predicate, names or ["samples"]))
    if columns is not None:
        rel = rel.project(", ".join(quote_ident(c) for c in columns))
    return rel


def select(ds: Dataset, predicate: str | None, *, columns: Sequence[str] | None = None,
           conditions: Sequence[str] = (), order_by: Sequence[str] = (), threads: int | None = None) -> pa.Table:
    """Rows of ``samples`` matching an untrusted ``predicate``, on a sandboxed connection.

    Args:
        ds: the dataset.
        predicate: DuckDB expression from a config, pipeline or loader (None: all rows).
        columns: output columns (default: all).
        conditions: further filters written by this package (trusted SQL), ANDed.
        order_by: column names to sort by.

    Raises:
        QueryError: one line naming the bad predicate, unknown column or SQL problem.
    """
    con = sandboxed_connection(ds, threads=threads)
    try:
        rel = con.table("samples")
        for c in conditions:
            rel = rel.filter(c)
        rel = filter_relation(con, rel, predicate)
        if order_by:
            rel = rel.order(", ".join(quote_ident(c) for c in order_by))
        if columns is not None:
            rel = rel.project(", ".join(quote_ident(c) for c in columns))
        return rel.to_arrow_table()
    except QueryError:
        raise
    except duckdb.Error as e:
        raise QueryError(_error_message(e, ds, predicate or "")) from None
    finally:
        con.close()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _error_message(e: duckdb.Error, ds: Dataset, sql: str) -> str:
    if isinstance(e, duckdb.BinderException):
        return _binder_message(e, ds)
    if isinstance(e, duckdb.CatalogException):
        msg = _first_line(e)
        if "embeddings" in sql and not ds.embeddings:
            msg = f"{ds.url} has no embeddings yet (run `curate score`); {msg}"
        return msg
    if isinstance(e, duckdb.ParserException):
        return f"SQL syntax error: {_first_line(e)}"
    return _first_line(e)


def query(ds: Dataset | str, sql: str, *, storage_options: dict | None = None) -> pa.Table:
    """Run ``sql`` against the dataset's views with **full access** and return an Arrow table.

    For ``curate query`` (the user's own SQL) and SQL written by this package only; never
    pass a predicate from a config, pipeline or loader here (use :func:`select`).
    """
    if isinstance(ds, str):
        ds = Dataset(ds, storage_options)
    con = connect(ds)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as e:
        raise QueryError(_error_message(e, ds, sql)) from None
    finally:
        con.close()


def _binder_message(e: Exception, ds: Dataset) -> str:
    text = _first_line(e)
    m = re.search(r'column "?([^"\s]+)"? not found', text, re.I) or re.search(r'Referenced column "([^"]+)"', text)
    if m:
        return f"unknown column {m.group(1)!r} in query; samples has: {', '.join(ds.columns)}"
    return text


def where_uids(ds: Dataset, predicate: str) -> list[str]:
    """uids of samples matching an untrusted DuckDB predicate over ``samples`` (sandboxed)."""
    return [str(u) for u in select(ds, predicate, columns=["uid"]).column("uid").to_pylist()]


def write_result(table: pa.Table, out: str, fmt: str) -> None:
    """Write a query result as csv, json (records) or parquet."""
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


def predicate_columns(predicate: str | None, available: Sequence[str]) -> list[str] | None:
    """The columns of ``available`` that ``predicate`` can reference, so a reader loads only those.

    Over-approximates (any name part that matches a column, case-insensitively, as DuckDB
    resolves identifiers) and returns None when the predicate selects columns by pattern
    (``*``, ``COLUMNS(...)``): the caller then reads every column. A blank predicate needs none.
    """
    if predicate is None or not predicate.strip():
        return []
    probe = f"SELECT * FROM samples WHERE ({check_predicate(predicate)}\n)"
    tree = _serialize(probe)
    by_lower = {c.lower(): c for c in available}
    found: dict[str, None] = {}
    star = False

    def walk(node: Any) -> None:
        nonlocal star
        if isinstance(node, dict):
            if node.get("class") == "STAR":
                star = True
            elif node.get("class") == "COLUMN_REF":
                for part in node.get("column_names") or []:
                    if str(part).lower() in by_lower:
                        found[by_lower[str(part).lower()]] = None
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree["statements"][0]["node"].get("where_clause"))
    return None if star else list(found)
