"""A DuckDB aggregate over 10M metadata rows (DESIGN.md target: < 1 s).

Writes a dataset-shaped metadata table (``meta/v1/*.parquet``, 10M rows over 100 shards,
the columns a curated dataset has) and times ``curate query``'s path (``curation.io.query``
views) against the same SQL on plain ``read_parquet`` (the baseline a user writes by hand).

    python bench/bench_query.py [--rows 10000000 --shards 100]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SQL = ("SELECT status, count(*) AS n, avg(clip_score) AS mean_score, "
       "sum(CASE WHEN keep THEN 1 ELSE 0 END) AS kept FROM samples GROUP BY status ORDER BY n DESC")


def build(root: str, rows: int, shards: int) -> None:
    """A committed dataset whose metadata has ``rows`` rows (tars are empty: not read here)."""
    from curation.io.format import meta_file, shard_tar
    from curation.io.fs import get_fs
    from curation.io.writer import now_iso, write_manifest

    rng = np.random.default_rng(0)
    per = rows // shards
    statuses = np.array(["success"] * 9 + ["http_404"])
    entries = []
    for s in range(shards):
        n = per
        uid = np.char.add(f"s{s}-", np.arange(n).astype(str))
        status = statuses[rng.integers(0, 10, n)]
        t = pa.table({
            "uid": uid, "key": uid, "shard": np.full(n, s, np.int32),
            "tar_offset": np.arange(n, dtype=np.int64) * 4096, "tar_size": np.full(n, 3000, np.int64),
            "url": np.char.add("http://example.invalid/", uid), "caption": np.full(n, "a caption"),
            "status": status, "error": pa.nulls(n, pa.string()),
            "width": np.full(n, 256, np.int32), "height": np.full(n, 256, np.int32),
            "original_width": np.full(n, 512, np.int32), "original_height": np.full(n, 384, np.int32),
            "sha256": pa.nulls(n, pa.string()),
            "clip_score": rng.normal(0.3, 0.05, n).astype(np.float32), "keep": rng.random(n) < 0.3,
        })
        os.makedirs(os.path.join(root, "meta", "v1"), exist_ok=True)
        os.makedirs(os.path.join(root, "shards"), exist_ok=True)
        pq.write_table(t, os.path.join(root, meta_file(1, s)))
        open(os.path.join(root, shard_tar(s)), "wb").close()
        entries.append({"id": s, "tar": shard_tar(s), "tar_bytes": 0, "num_samples": n, "num_images": n})
    fs, path = get_fs(root)
    write_manifest(fs, path, {"format": "curation-dataset", "format_version": 1, "created_at": now_iso(),
                              "version": 1, "num_samples": per * shards, "columns": t.column_names,
                              "shards": entries, "history": [{"version": 1, "parent": None, "stage": "bench",
                                                              "config_hash": "0", "created_at": now_iso()}],
                              "embeddings": None}, root)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    import duckdb

    from curation.io.query import query

    tmp = tempfile.mkdtemp(prefix="bench-query-")
    try:
        t0 = time.perf_counter()
        build(tmp, a.rows, a.shards)
        built = time.perf_counter() - t0
        ours, base = [], []
        for _ in range(a.repeat):
            t = time.perf_counter()
            res = query(tmp, SQL)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            con = duckdb.connect()
            ref = con.sql(SQL.replace("FROM samples", f"FROM read_parquet('{tmp}/meta/v1/*.parquet')")).to_arrow_table()
            con.close()
            base.append(time.perf_counter() - t)
        assert res.column("n").to_pylist() == ref.column("n").to_pylist()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"rows": a.rows, "build_s": round(built, 1), "curate_query_s": round(min(ours), 3),
                      "plain_duckdb_s": round(min(base), 3), "ratio": round(min(base) / min(ours), 2),
                      "target_s": 1.0, "result": res.to_pylist()}, indent=1, default=str))


if __name__ == "__main__":
    main()
