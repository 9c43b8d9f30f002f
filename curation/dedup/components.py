"""Distributed pHash dedup: multi-index-hashing band partitions, then connected components.

Bands are those of :func:`curation.dedup.mih.band_masks` (``radius + 1`` disjoint bands of
the 64 bits). Each surviving sample sends one record per band, keyed by (band, band value),
to the partition of that key; by the pigeonhole principle two codes within ``radius`` bits
agree on at least one band, so every near pair meets in at least one partition task.
:func:`band_partition` finds its pairs (candidates verified by exact Hamming distance, as
:func:`curation.dedup.mih.near_pairs` does) and emits only a spanning forest of them, so its
output is at most one edge per record.

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
    """Route one record per (sample, band) to the partition of its (band, value) bucket."""
    if not len(pos):
        return
    codes = np.asarray(codes, dtype=np.uint64)
    tables, buckets = [], []
    for b, (shift, width) in enumerate(mih.band_masks(job.radius)):
        val = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        bucket = (np.uint64(b) << np.uint64(ROW_BITS)) | val
        buckets.append(bucket)
        tables.append(pa.table({"bucket": bucket, "code": codes, "key": keys, "pos": pos}, schema=BANDS))
    t = pa.concat_tables(tables)
    part = partition_of(np.concatenate(buckets), job.n_parts)
    for q, piece in split_by(t, part, job.n_parts).items():
        job.work.write(f"pb/q{q:05d}/{src}.parquet", piece)


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


def _near_in_buckets(bucket: np.ndarray, cid: np.ndarray, ucode: np.ndarray, radius: int,
                     cells: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs (code ids a < b by position) sharing a bucket and within ``radius`` bits.

    ``bucket``/``cid`` are sorted by bucket. Each bucket is verified as tiles of at most
    ``cells`` code pairs (xor + popcount), so memory stays bounded even for a huge bucket.
    Returns (a, b, number of candidate pairs looked at).
    """
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if len(bucket) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(bucket)].astype(np.int64)
    code = ucode[cid]
    out_a, out_b, n_cand = [], [], 0
    for s, e in zip(starts, ends):
        m = int(e - s)
        if m < 2:
            continue
        n_cand += m * (m - 1) // 2
        cc, ids = code[s:e], cid[s:e]
        rows = max(1, cells // m)
        for i0 in range(0, m - 1, rows):
            d = np.bitwise_count(cc[i0:i0 + rows, None] ^ cc[None, :])
            ii, jj = np.nonzero(d <= radius)
            keep = jj > ii + i0
            if keep.any():
                out_a.append(ids[ii[keep] + i0])
                out_b.append(ids[jj[keep]])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), n_cand
    return np.concatenate(out_a), np.concatenate(out_b), n_cand


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
    ca, cb, n_cand = _near_in_buckets(bucket, cid, ucode, job.radius)
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
