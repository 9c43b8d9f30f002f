"""A dataset's summary: counts, status mix, columns, versions, size, per-stage stats."""
from __future__ import annotations

import json
from typing import Any

from curation.io.dataset import Dataset
from curation.io.fs import join
from curation.io.query import query


def describe(ds: Dataset) -> dict[str, Any]:
    """Everything ``curate inspect`` shows, as a dict."""
    status = query(ds, "SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY n DESC").to_pylist()
    info: dict[str, Any] = {
        "url": ds.url, "version": ds.version, "num_samples": ds.num_samples,
        "num_shards": len(ds.shard_ids), "num_images": sum(s["num_images"] for s in ds.shards),
        "tar_bytes": sum(s["tar_bytes"] for s in ds.shards), "columns": ds.columns,
        "status_counts": {r["status"]: r["n"] for r in status},
        "history": [{k: h.get(k) for k in ("version", "parent", "stage", "config_hash", "created_at", "stats")}
                    for h in ds.history],
        "embeddings": ds.embeddings,
    }
    run_path = join(ds.root.rsplit("/", 1)[0], "run.json")
    if ds.fs.exists(run_path):
        info["run"] = json.loads(ds.fs.cat_file(run_path))
    return info
