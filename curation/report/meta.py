"""The report's window on the metadata: DuckDB aggregates and seeded samples, never whole tables.

A :class:`MetaView` is a DuckDB view ``m`` over the current metadata version (the dataset's
Parquet files, read by DuckDB itself) with one derived column, ``category`` (see
:mod:`curation.report.analysis`). Every number the report shows is a ``GROUP BY`` or an
aggregate in DuckDB, and every row it shows comes from a seeded, bounded sample, so the
report's memory is bounded by what it draws (thumbnails, histogram samples), not by the
dataset: the same code reports on 2,000 rows and on a billion.

Samples are deterministic: rows are ranked by a hash of ``uid`` and a per-section seed
string, so the same dataset always renders the same page.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from curation.errors import DatasetError
from curation.io import Dataset
from curation.io.query import connect, quote_ident

# Histograms and score summaries are drawn from at most this many values per series.
HIST_SAMPLE = 100_000


class MetaView:
    """DuckDB view ``m`` of one metadata table plus its ``category`` column.

    Build with :meth:`of_dataset` (the dataset's Parquet files) or :meth:`of_table` (an
    in-memory table, for tests and small inputs). Column names are data, so every one is quoted.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, columns: Sequence[str]):
        self.con = con
        self.columns = list(columns)
        sel = ", ".join(quote_ident(c) for c in self.columns)
        con.execute(f"CREATE OR REPLACE TEMP VIEW m AS SELECT {sel}, {self._category_sql()} AS category "
                    f"FROM {source}")

    @classmethod
    def of_dataset(cls, ds: Dataset, columns: Sequence[str]) -> "MetaView":
        """The current version of ``ds``, restricted to ``columns`` that exist."""
        try:
            con = connect(ds, threads=2)
        except duckdb.IOException as e:
            # name the file the manifest lists but storage lacks (only on this error path)
            for url in ds.meta_urls():
                if not ds.fs.exists(url):
                    raise DatasetError(f"{url}: listed by the manifest but missing") from None
            raise DatasetError(f"{ds.url}: metadata unreadable ({str(e).splitlines()[0]})") from None
        return cls(con, "samples", [c for c in columns if c in ds.columns])

    @classmethod
    def of_table(cls, table: pa.Table) -> "MetaView":
        con = duckdb.connect()
        con.register("t", table)
        return cls(con, "t", table.column_names)

    # -- helpers --------------------------------------------------------------------
    def has(self, column: str) -> bool:
        return column in self.columns

    def col(self, column: str, cast: str = "VARCHAR") -> str:
        """The quoted column, or a typed NULL when the table lacks it."""
        return quote_ident(column) if self.has(column) else f"(NULL::{cast})"

    def _category_sql(self) -> str:
        status, dup, why = self.col("status"), self.col("dup_of"), self.col("dedup_reason")
        reasons = self.col("reasons", "VARCHAR[]")
        keep = self.col("keep", "BOOLEAN")
        if not self.has("status"):
            status = "'success'"
        return (f"CASE WHEN {status} IS DISTINCT FROM 'success' THEN 'download:' || coalesce({status}, 'unknown') "
                f"WHEN {dup} IS NOT NULL OR {why} IS NOT NULL THEN 'dedup:' || coalesce({why}, 'duplicate') "
                f"WHEN coalesce(len({reasons}), 0) > 0 THEN 'filter:' || {reasons}[1] "
                f"WHEN {keep} = false THEN 'filter:unspecified' ELSE 'kept' END")

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.con.execute(sql, list(params)).fetchall()
        return rows[0][0] if rows else None

    # -- aggregates -----------------------------------------------------------------
    def count(self, where: str = "true") -> int:
        return int(self.scalar(f"SELECT count(*) FROM m WHERE {where}") or 0)

    def category_counts(self) -> Counter:
        """Samples per category (the funnel's input)."""
        return Counter({r["category"]: int(r["n"]) for r in
                        self.rows("SELECT category, count(*) AS n FROM m GROUP BY category")})

    def value_counts(self, column: str, where: str = "true") -> list[tuple[Any, int]]:
        """``(value, count)`` of a column, most common first (ties by value)."""
        c = self.col(column)
        return [(r["v"], int(r["n"])) for r in self.rows(
            f"SELECT {c} AS v, count(*) AS n FROM m WHERE {where} GROUP BY v ORDER BY n DESC, v NULLS LAST")]

    def list_counts(self, column: str, where: str = "true") -> list[tuple[str, int]]:
        """How often each element of a list column occurs, most common first."""
        if not self.has(column):
            return []
        c = quote_ident(column)
        return [(r["v"], int(r["n"])) for r in self.rows(
            f"SELECT v, count(*) AS n FROM (SELECT unnest({c}) AS v FROM m WHERE {where}) "
            f"WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v")]

    def summary(self, column: str, where: str) -> dict[str, Any]:
        """count, min, median (approximate above :data:`HIST_SAMPLE` values), mean, max."""
        c = quote_ident(column)
        r = self.rows(f"SELECT count({c}) AS n, min({c}) AS lo, approx_quantile({c}, 0.5) AS med, "
                      f"avg({c}) AS mean, max({c}) AS hi FROM m WHERE {where} AND {c} IS NOT NULL")[0]
        if r["n"] and r["n"] <= HIST_SAMPLE:
            r["med"] = self.scalar(f"SELECT median({c}) FROM m WHERE {where} AND {c} IS NOT NULL")
        return r

    def values(self, column: str, where: str, seed: str, limit: int = HIST_SAMPLE) -> list[Any]:
        """Non-null values of ``column`` where ``where`` holds: all of them up to ``limit``,
        else a seeded sample of ``limit`` (histograms keep their shape)."""
        c = quote_ident(column)
        return [r["v"] for r in self.rows(
            f"SELECT {c} AS v FROM m WHERE {where} AND {c} IS NOT NULL "
            f"ORDER BY hash({self.col('uid')} || ?) LIMIT {int(limit)}", [seed])]

    def pick(self, where: str, k: int, seed: str) -> list[dict[str, Any]]:
        """Up to ``k`` whole rows where ``where`` holds, drawn with ``seed`` (stable per dataset),
        returned in dataset order (shard, then tar offset, then uid)."""
        order = ", ".join(f"{self.col(c)} NULLS LAST" for c in ("shard", "tar_offset", "uid"))
        return self.rows(
            f"SELECT * FROM (SELECT * FROM m WHERE {where} "
            f"ORDER BY hash({self.col('uid')} || ?) LIMIT {int(k)}) ORDER BY {order}", [seed])

    def dup_groups(self, max_groups: int, members: int) -> list[tuple[dict[str, Any], list[dict[str, Any]], int]]:
        """The largest duplicate groups: ``(kept row, up to members duplicate rows, group size)``.

        Groups whose kept sample is not in the table are skipped; ties break by the kept uid.
        """
        if not self.has("dup_of"):
            return []
        top = self.rows("SELECT d.dup_of AS keeper, count(*) AS n FROM m d JOIN m k ON k.uid = d.dup_of "
                        f"WHERE d.dup_of IS NOT NULL GROUP BY d.dup_of ORDER BY n DESC, keeper LIMIT {int(max_groups)}")
        out = []
        for g in top:
            keeper = self.rows("SELECT * FROM m WHERE uid = ?", [g["keeper"]])[0]
            dups = self.rows("SELECT * FROM m WHERE dup_of = ? "
                             f"ORDER BY uid LIMIT {int(members)}", [g["keeper"]])
            out.append((keeper, dups, int(g["n"])))
        return out

    def close(self) -> None:
        self.con.close()

