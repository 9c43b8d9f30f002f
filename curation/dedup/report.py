"""Duplicate groups (for ``curate query``/the report) and evaluation against ground truth."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.io import Dataset

_GROUPS_SQL = """
SELECT dup_of AS kept, count(*) + 1 AS size, list(uid ORDER BY uid) AS duplicates,
       list(DISTINCT dedup_reason ORDER BY dedup_reason) AS reasons
FROM t WHERE dup_of IS NOT NULL GROUP BY dup_of ORDER BY size DESC, kept
"""


def dedup_groups(ds: Dataset, limit: int | None = None) -> list[dict[str, Any]]:
    """Duplicate groups of a deduplicated dataset, largest first.

    Each is ``{"kept": uid, "size": members incl. the kept one, "duplicates": [uids],
    "reasons": [...]}``. The same query works in ``curate query`` over the ``samples`` view:
    ``SELECT dup_of, count(*) FROM samples WHERE dup_of IS NOT NULL GROUP BY dup_of``.
    """
    import duckdb

    t = ds.read_meta(columns=["uid", "dup_of", "dedup_reason"])
    con = duckdb.connect()
    con.register("t", t)
    sql = _GROUPS_SQL + (f" LIMIT {int(limit)}" if limit else "")
    out = con.sql(sql).to_arrow_table().to_pylist()
    con.close()
    return out


def _root_map(uids: list[str], dup_of: list[str | None]) -> dict[str, str]:
    return {u: (d if d is not None else u) for u, d in zip(uids, dup_of)}


def evaluate(ds: Dataset, truth: pa.Table | str) -> dict[str, dict[str, float]]:
    """Precision/recall of the dataset's dedup columns against ground truth, per kind.

    ``truth`` (table or Parquet path) has ``uid, dup_group, dup_kind (null|exact|near),
    dup_of_uid``. For kind k:

    * recall: of the truth pairs (copy, original) of kind k where both have an image in the
      dataset, the fraction that ended in the same predicted group (same kept uid), whichever
      member was kept;
    * precision: of the predicted pairs (sample, dup_of) whose reason maps to k (exact ->
      ``exact``; near -> ``phash``; ``semantic`` is reported as its own row), the fraction
      whose two samples share a truth ``dup_group``.

    Returns ``{"exact": {"precision", "recall", "predicted", "truth"}, "near": {...},
    "semantic": {...}}``; precision/recall are 1.0 when there is nothing to count.
    """
    import pyarrow.parquet as pq

    table: pa.Table = pq.read_table(truth) if isinstance(truth, str) else truth
    truth_rows: list[dict[str, Any]] = table.to_pylist()
    meta = ds.read_meta(columns=["uid", "tar_offset", "dup_of", "dedup_reason"]).to_pylist()
    root = _root_map([r["uid"] for r in meta], [r["dup_of"] for r in meta])
    present = {r["uid"] for r in meta if r["tar_offset"] is not None}
    group = {r["uid"]: r["dup_group"] for r in truth_rows if r.get("dup_group") is not None}
    out: dict[str, dict[str, float]] = {}
    for kind, reasons in (("exact", {"exact"}), ("near", {"phash"}), ("semantic", {"semantic"})):
        pairs = [(r["uid"], r["dup_of_uid"]) for r in truth_rows
                 if r.get("dup_kind") == kind and r["uid"] in present and r.get("dup_of_uid") in present]
        hit = sum(root[a] == root[b] for a, b in pairs)
        pred = [(r["uid"], r["dup_of"]) for r in meta if r["dedup_reason"] in reasons]
        good = sum(group.get(a) is not None and group.get(a) == group.get(b) for a, b in pred)
        out[kind] = {"precision": good / len(pred) if pred else 1.0,
                     "recall": hit / len(pairs) if pairs else 1.0,
                     "predicted": len(pred), "truth": len(pairs)}
    return out
