"""Predicates from configs, loaders and pipelines run sandboxed (issue 17, DESIGN.md 5.7).

Each attack must fail with a one-line error before reading or writing anything; legitimate
predicates (including subqueries over ``samples``) keep working.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import ConfigError
from curation.io.query import QueryError, check_predicate, filter_relation, sandboxed_connection, select
from tests.helpers import make_dataset


@pytest.fixture()
def setup(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    secret = tmp_path / "auth_token"
    secret.write_text("s3cr3t\n")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"uid": ["s0-i0"]}), other)
    return ds, secret, other, tmp_path


def attacks(secret, other, out):
    return {
        "read_text": f"uid IN (SELECT content FROM read_text('{secret}'))",
        "file as table": f"uid IN (SELECT uid FROM '{other}')",
        "read_parquet": f"uid IN (SELECT uid FROM read_parquet('{other}'))",
        "glob": f"uid IN (SELECT file FROM glob('{secret.parent}/*'))",
        "stacked": f"1); COPY samples TO '{out}'; SELECT (1",
        "stacked install": "1); INSTALL httpfs; LOAD httpfs; SELECT (1",
        "comment escape": f"true) --\n; COPY samples TO '{out}'; SELECT (1",
        "getenv": "getenv('HOME') IS NOT NULL",
        "settings": "uid IN (SELECT value FROM duckdb_settings())",
        "attach": f"1); ATTACH '{out}.db'; SELECT (1",
    }


def test_every_attack_fails_with_one_line_and_writes_nothing(setup):
    ds, secret, other, tmp = setup
    out = tmp / "stolen.csv"
    for name, pred in attacks(secret, other, out).items():
        with pytest.raises(QueryError) as e:
            select(ds, pred, columns=["uid"])
        assert "\n" not in str(e.value), name
        assert "s3cr3t" not in str(e.value), name
    assert not out.exists() and not os.path.exists(f"{out}.db")
    assert sorted(os.listdir(tmp)) == ["auth_token", "ds", "other.parquet"]


def test_connection_itself_is_locked(setup):
    """Even SQL that bypassed the parser check could not reach files, extensions or settings."""
    import duckdb

    ds, secret, other, tmp = setup
    con = sandboxed_connection(ds)
    for sql in [f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM '{other}'",
                f"COPY (SELECT 1) TO '{tmp}/x.csv'", "INSTALL httpfs", "LOAD httpfs",
                "SET enable_external_access = true", "SET allowed_directories = ['/']",
                f"SELECT * FROM read_text('{ds.root}/meta/../../auth_token')"]:
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
    row = con.execute("SELECT count(*) FROM samples").fetchone()
    assert row is not None and row[0] == ds.num_samples  # its own files: yes
    assert not (tmp / "x.csv").exists()


def test_legitimate_predicates(setup):
    ds = setup[0]
    assert select(ds, "status = 'success'", columns=["uid"]).num_rows == 10
    sub = "uid IN (SELECT uid FROM samples WHERE shard = 1) AND status = 'success'"
    assert sorted(select(ds, sub, columns=["uid"]).column("uid").to_pylist()) == [f"s1-i{i}" for i in range(5)]
    assert select(ds, None).num_rows == ds.num_samples
    with pytest.raises(QueryError, match="unknown column 'nope'"):
        select(ds, "nope > 1")
    with pytest.raises(QueryError, match="one expression, not 2 statements"):
        check_predicate("true); SELECT (1")


def test_column_names_are_quoted(tmp_path):
    """A column named like SQL (manifest columns are data) is selected, not executed."""
    t = pa.table({"uid": ["a", "b"], "x; DROP TABLE samples; --": [1, 2], 'we"ird': [3, 4]})
    con = sandboxed_connection(tables={"samples": t})
    got = filter_relation(con, "samples", '"we""ird" > 3', columns=["uid", "x; DROP TABLE samples; --"])
    assert got.fetchall() == [("b", 2)]


def test_callers_use_the_sandbox(setup, tmp_path):
    """filter --where, reshard --where, StreamingDataset(where=) and Parquet train sources."""
    from curation.filters.stage import FilterStage
    from curation.reshard.stage import ReshardConfig, plan
    from curation.stage import StageContext
    from curation.stream.index import build_index
    from curation.train.sources import read_parquet_rows

    ds, secret, other, tmp = setup
    bad = f"uid IN (SELECT content FROM read_text('{secret}'))"
    with pytest.raises(ConfigError, match="read_text"):
        FilterStage({"where": bad, "parallel": False})(ds, StageContext(output=ds.url))
    with pytest.raises(QueryError, match="read_text"):
        plan(ds, ReshardConfig(where=bad))
    assert sum(len(s) for s in plan(ds, ReshardConfig(where="shard = 0"))) == 5
    with pytest.raises(ConfigError, match="read_text"):
        build_index(ds, bad, [], "caption")
    assert len(build_index(ds, "shard = 1", [], "caption")) == 5
    with pytest.raises(ConfigError, match="read_text"):
        read_parquet_rows(str(other), bad)
    with pytest.raises(ConfigError, match="may not read"):
        read_parquet_rows(str(other), f"uid IN (SELECT content FROM '{secret}')")
    assert read_parquet_rows(str(other), "uid = 's0-i0'").num_rows == 1


def test_remote_dataset_sandbox_reaches_only_its_prefix(s3_server):
    """On S3 the registered credentials reach the whole bucket; the sandbox does not."""
    import duckdb

    ds = make_dataset(s3_server.url("trust/ds"), storage_options=s3_server.storage_options)
    fs = s3_server.filesystem()
    fs.pipe(f"{s3_server.bucket}/trust/secret.txt", b"TOPSECRET")
    assert select(ds, "status = 'success'", columns=["uid"]).num_rows == 10
    with pytest.raises(QueryError):
        select(ds, f"uid IN (SELECT content FROM read_text('{s3_server.url('trust/secret.txt')}'))")
    con = sandboxed_connection(ds)
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        con.sql(f"SELECT * FROM read_text('{s3_server.url('trust/secret.txt')}')").fetchall()


def test_curate_query_keeps_full_access(setup):
    """The user's own interactive SQL is trusted: it may read files (documented in its help)."""
    from curation.io.query import query

    ds, secret, _, _ = setup
    t = query(ds, f"SELECT content FROM read_text('{secret}')")
    assert t.column("content").to_pylist() == ["s3cr3t\n"]
