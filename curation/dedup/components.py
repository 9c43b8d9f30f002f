"""Distributed pHash dedup: multi-index-hashing band partitions, then connected components.

Bands are those of :func:`curation.dedup.mih.band_masks` (``radius + 1`` disjoint bands of
the 64 bits). Each surviving sample sends one record per band, keyed by (band, band value),
to the partition of that key; by the pigeonhole principle two codes within ``radius`` bits
agree on at least one band, so every near pair meets in at least one partition task.
Identical codes are collapsed before that, per scan batch (:func:`write_bands`) and again
per partition. :func:`band_partition` finds its pairs with
:func:`curation.dedup.mih.grouped_near_pairs`: a bucket is split recursively on the bits
its members may still differ in until its pieces are small, so the candidate pairs grow
linearly with the rows rather than quadratically (a first-level bucket holds ``N / 8192``
codes at radius 4), and every candidate is verified by its exact Hamming distance. Only a
spanning forest of the pairs is emitted, so a task's output is at most one edge per record.

Connected components of the union of those forests are found by the alternating
large-star / small-star rounds of Kiveris et al. (2014, "Connected Components in MapReduce
and Beyond"), one DuckDB task per node-hash partition per round, O(log^2 n) rounds. Nodes
are keep keys, so the centre each component ends up as a star around is its minimum key:
the sample the keep policy keeps. No task holds more than its partition's edges.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup import mih
from curation.dedup.work import ROW_BITS, decisions, key_uid, partition_of, split_by

BANDS = pa.schema([("bucket", pa.uint64()), ("code", pa.uint64()), ("key", pa.string()), ("pos", pa.int64())])
EDGES = pa.schema([("ak", pa.string()), ("ap", pa.int64()), ("bk", pa.string()), ("bp", pa.int64())])


def write_bands(job: Any, src: str, pos: np.ndarray, keys: list[str], codes: np.ndarray) -> None:
    """Route one record per (sample, band) to the partition of its (band, value) bucket.

    Identical codes of this batch (flat images share one pHash) are collapsed first: the
    first sample of each code goes to the bands, the others are linked to it by an edge
    written straight into the components' first round, so a code shared by many samples
    costs one record per batch and band, not one per sample.
    """
    if not len(pos):
        return
    codes = np.asarray(codes, dtype=np.uint64)
    pos = np.asarray(pos, dtype=np.int64)
    uniq, first, inv = np.unique(codes, return_index=True, return_inverse=True)
    rep = first[inv]
    dup = np.flatnonzero(rep != np.arange(len(codes)))
    karr = pa.array(keys, pa.string())
    if len(dup):
        _write_edges(job, 0, f"d{src}", pa.table({"ak": karr.take(pa.array(dup)), "ap": pos[dup],
                                                  "bk": karr.take(pa.array(rep[dup])), "bp": pos[rep[dup]]},
                                                 schema=EDGES))
        pos, codes, karr = pos[first], uniq, karr.take(pa.array(first))
    tables, buckets = [], []
    for b, (shift, width) in enumerate(mih.band_masks(job.radius)):
        val = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        bucket = (np.uint64(b) << np.uint64(ROW_BITS)) | val
        buckets.append(bucket)
        tables.append(pa.table({"bucket": bucket, "code": codes, "key": karr, "pos": pos}, schema=BANDS))
    t = pa.concat_tables(tables)
    part = partition_of(np.concatenate(buckets), job.n_parts)
    for q, piece in split_by(t, part, job.n_parts).items():
        job.work.write(f"pb/q{q:05d}/{src}.parquet", piece)


def _free_bits(bucket: np.ndarray, radius: int) -> np.ndarray:
    """Per (band, value) bucket key: the bits its members may differ in (all but the band's)."""
    bands = mih.band_masks(radius)
    if len(bands) == 1:  # radius 0: one band of all 64 bits (the key is the code itself)
        return np.zeros(len(bucket), dtype=np.uint64)
    masks = np.array([mih.ALL_BITS ^ (((1 << w) - 1) << s) for s, w in bands], dtype=np.uint64)
    return masks[(np.asarray(bucket, dtype=np.uint64) >> np.uint64(ROW_BITS)).astype(np.int64)]


def _forest(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A spanning forest of the graph (n nodes, edges a-b): (node, its component's first node)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    root = first[labels]
    sel = np.flatnonzero(root != np.arange(n))
    return sel, root[sel]


def band_partition(q: int, *, job: Any) -> dict[str, int]:
    """Task: near pairs of one band partition, emitted as a spanning forest (module docstring)."""
    t = job.work.read_dir(f"pb/q{q:05d}", BANDS)
    if not t.num_rows:
        return {"edges": 0, "candidates": 0}
    pos_all = t.column("pos").to_numpy()
    nodes, first, node_of = np.unique(pos_all, return_index=True, return_inverse=True)
    keys = t.column("key").take(pa.array(first))
    codes_all = t.column("code").to_numpy()
    code = codes_all[first]
    ea, eb = [], []
    # identical codes: one star per code
    ucode, cinv = np.unique(code, return_inverse=True)
    rep = np.full(len(ucode), len(code), dtype=np.int64)
    np.minimum.at(rep, cinv, np.arange(len(code)))  # first node of each code
    others = np.flatnonzero(rep[cinv] != np.arange(len(code)))
    ea.append(others)
    eb.append(rep[cinv[others]])
    # distinct codes sharing a bucket: candidates, verified by exact distance
    bucket = t.column("bucket").to_numpy()
    cid = cinv[node_of]
    order = np.lexsort((cid, bucket))
    bucket, cid = bucket[order], cid[order]
    first_of = np.r_[True, (bucket[1:] != bucket[:-1]) | (cid[1:] != cid[:-1])]
    bucket, cid = bucket[first_of], cid[first_of]  # distinct (bucket, code) entries
    ca, cb, n_cand = mih.grouped_near_pairs(bucket, cid, ucode, _free_bits(bucket, job.radius), job.radius)
    ea.append(rep[ca])
    eb.append(rep[cb])
    a, b = np.concatenate(ea).astype(np.int64), np.concatenate(eb).astype(np.int64)
    src, dst = _forest(len(nodes), a, b)
    edges = pa.table({"ak": keys.take(pa.array(src)), "ap": nodes[src],
                      "bk": keys.take(pa.array(dst)), "bp": nodes[dst]}, schema=EDGES)
    _write_edges(job, 0, f"q{q:05d}", edges)
    return {"edges": int(len(src)), "candidates": n_cand}


def _write_edges(job: Any, rnd: int, name: str, edges: pa.Table) -> None:
    """Store undirected edges in both directions, each by the partition of its source node."""
    if not edges.num_rows:
        return
    rev = pa.table({"ak": edges.column("bk"), "ap": edges.column("bp"),
                    "bk": edges.column("ak"), "bp": edges.column("ap")}, schema=EDGES)
    both = pa.concat_tables([edges.cast(EDGES), rev])
    part = partition_of(both.column("ap").to_numpy().astype(np.uint64), job.n_parts)
    for h, piece in split_by(both, part, job.n_parts).items():
        job.work.write(f"cc/r{rnd:03d}/h{h:05d}/{name}.parquet", piece)


_EDGES_SQL = "CREATE TEMP TABLE e AS SELECT DISTINCT ak, ap, bk, bp FROM t WHERE ak <> bk"
_NODES_SQL = """CREATE TEMP TABLE m AS SELECT ak, any_value(ap) AS ap, min(bk) AS nk,
  arg_min(bp, bk) AS np_, count(*) AS deg FROM e {where} GROUP BY ak"""
_LARGE = """
SELECT e.bk AS ak, e.bp AS ap,
       CASE WHEN m.nk < e.ak THEN m.nk ELSE e.ak END AS bk,
       CASE WHEN m.nk < e.ak THEN m.np_ ELSE e.ap END AS bp
FROM e JOIN m ON e.ak = m.ak WHERE e.bk > e.ak
"""
_SMALL = """
SELECT e.bk AS ak, e.bp AS ap, m.nk AS bk, m.np_ AS bp FROM e JOIN m ON e.ak = m.ak
WHERE e.bk < e.ak AND e.bk <> m.nk
UNION ALL SELECT ak, ap, nk AS bk, np_ AS bp FROM m
"""


def star_step(h: int, *, job: Any, rnd: int, kind: str) -> dict[str, int]:
    """Task: one large-star, small-star or final step over node partition ``h`` of round ``rnd``.

    Returns ``violations``: nodes of the input that are neither a star centre (every
    neighbour larger) nor a leaf (one neighbour, smaller). Zero everywhere means every
    component is a star around its minimum key; ``final`` then writes each leaf's decision.
    """
    import duckdb

    t = job.work.read_dir(f"cc/r{rnd:03d}/h{h:05d}", EDGES)
    con = duckdb.connect()
    con.register("t", t)
    con.execute(_EDGES_SQL)
    con.execute(_NODES_SQL.format(where="WHERE bk < ak" if kind == "small" else ""))
    out: dict[str, int] = {}
    if kind == "large":
        out["violations"] = int(con.execute("SELECT count(*) FROM m WHERE nk < ak AND deg > 1").fetchall()[0][0])
        _write_edges(job, rnd + 1, f"h{h:05d}", con.sql(_LARGE).to_arrow_table())
    elif kind == "small":
        _write_edges(job, rnd + 1, f"h{h:05d}", con.sql(_SMALL).to_arrow_table())
    else:
        leaves = con.sql("SELECT ap, np_, nk FROM m WHERE nk < ak ORDER BY ap").to_arrow_table()
        from curation.dedup.exact import _write_routed

        dec = decisions(leaves.column("ap").to_numpy(), leaves.column("np_").to_numpy(),
                        [key_uid(k) for k in leaves.column("nk").to_pylist()], "phash")
        _write_routed(job, "phash", f"h{h:05d}", dec)
        out["phash"] = dec.num_rows
    con.close()
    return out


def connected_components(job: Any, map: Any, max_rounds: int = 200) -> dict[str, int]:
    """Driver loop: alternate large-star and small-star waves until every component is a
    star, then write the phash decisions. Returns ``{"phash": removed, "cc_rounds": n}``."""
    parts = list(range(job.n_parts))
    rnd = 0
    for step in range(max_rounds):
        res = map(star_step, parts, job=job, rnd=rnd, kind="large")
        if sum(r["violations"] for r in res) == 0:
            fin = map(star_step, parts, job=job, rnd=rnd, kind="final")
            return {"phash": sum(r["phash"] for r in fin), "cc_rounds": step + 1}
        map(star_step, parts, job=job, rnd=rnd + 1, kind="small")
        rnd += 2
    raise RuntimeError(f"pHash connected components did not converge in {max_rounds} rounds")
