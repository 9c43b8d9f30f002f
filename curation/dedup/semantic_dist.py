"""Distributed SemDeDup: the steps of :mod:`curation.dedup.semantic`, with no n x d matrix
in any process.

1. :func:`prepare_group` (one task per group of shards): the candidates (samples with an
   image and an embedding, not removed by decontamination, exact or pHash), normalised
   straight into one buffer, written to the work folder with their sampling keys (uid
   hashes), in key order.
2. :func:`fit_centroids` (one task): k-means on the sample only (``sample_size`` points
   chosen by :func:`~curation.dedup.semantic.sample_mask`: a prefix of each group's file,
   so only the sample is read), put back in dataset order.
3. :func:`assign_group` (one task per group): nearest centroid of every candidate; rows are
   written sorted by cluster (coarse cell for ``two_level``) with per-cluster counts, so a
   cluster's rows are one byte range per group file (and a few Parquet row groups).
4. :func:`cluster_block` (one task per block of clusters or cells): reads each of its
   clusters' byte ranges from every group straight into one cluster-major buffer (so a
   cluster's rows are contiguous, in dataset order), for ``two_level`` fits and assigns
   the cell's fine clusters, then orders each cluster, runs the blocked pairwise step, and
   resolves each removed item to a kept one inside its cluster. Decisions go to the
   removed rows' groups.

Matrices go to and from the work folder in fixed-size chunks written from (and read into)
numpy buffers, never as whole ``bytes`` copies: a row's bytes are copied once per step.

Every function is the one the single-process :func:`~curation.dedup.semantic.semdedup`
uses, on the same inputs in the same order, so results are identical.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.dedup import semantic as sem
from curation.dedup.exact import Job, shard_embeddings
from curation.dedup.work import DECISION, decisions, group_of, sample_keys, split_by, uid_hash

CAND = pa.schema([("pos", pa.int64()), ("uid", pa.string()), ("h", pa.uint64())])
ASSIGNED = pa.schema([("pos", pa.int64()), ("uid", pa.string()), ("h", pa.uint64()), ("cos", pa.float32()),
                      ("label", pa.int64())])


@dataclass
class SemPlan:
    """SemDeDup settings plus what the driver learnt (counts only)."""

    eps: float
    n_clusters: int
    mode: str
    niter: int
    sample_size: int
    keep: str
    seed: int
    block: int
    dim: int = 0
    candidates: int = 0
    fit_threads: int = 1

    @property
    def first_level_k(self) -> int:
        return self.n_clusters if self.mode == "flat" else math.ceil(math.sqrt(self.n_clusters))


def _removed_positions(job: Job, g: int) -> np.ndarray:
    tabs = [job.work.read_dir(d, DECISION).column("pos").to_numpy()
            for d in (f"final/g{g:05d}/eval", f"dec/exact/g{g:05d}", f"dec/phash/g{g:05d}")]
    return np.concatenate(tabs) if tabs else np.zeros(0, np.int64)


def prepare_group(g: int, *, job: Job, plan_seed: int) -> dict[str, int]:
    """Task: write group ``g``'s SemDeDup candidates (normalised), with their sampling keys,
    in sampling-key order."""
    from curation.dedup.work import ROW_BITS

    ds = job.dataset()
    gone = _removed_positions(job, g)
    shards = list(job.group_shards(g))
    cap = sum(int(ds.shards[si].get("num_samples", 0)) for si in shards)
    x: np.ndarray | None = None
    pos_l, uid_l, at = [], [], 0
    d = int((ds.embeddings or {}).get("dim") or 0)
    for si in shards:
        sid = job.shard_ids[si]
        meta = ds.read_meta(sid, columns=["uid", "tar_offset"])
        uids = meta.column("uid").to_pylist()
        pos = (np.int64(si) << np.int64(ROW_BITS)) | np.arange(len(uids), dtype=np.int64)
        emb, has_emb = shard_embeddings(ds, sid, uids)
        d = emb.shape[1]
        if x is None or x.shape[1] != d or at + len(uids) > len(x):
            x = _grow(x, at, max(cap, at + len(uids)), d)
        ok = meta.column("tar_offset").is_valid().to_numpy(zero_copy_only=False) & has_emb & ~np.isin(pos, gone)
        sel = np.flatnonzero(ok)
        sem.l2_normalize(emb if len(sel) == len(emb) else emb[sel], out=x[at:at + len(sel)])
        at += len(sel)
        pos_l.append(pos[sel])
        uid_l.extend(uids[i] for i in sel)
    x = x[:at] if x is not None else np.zeros((0, d), np.float32)
    pos = np.concatenate(pos_l) if pos_l else np.zeros(0, np.int64)
    h = uid_hash(uid_l)
    # sorted by sampling key: the k-means sample of every group is a prefix of its file
    order = np.argsort(sample_keys(h, plan_seed), kind="stable")
    _write_rows(job, f"sem/x/g{g:05d}.f32", x, order)
    _write_table(job, f"sem/x/g{g:05d}.parquet", pa.table({
        "pos": pos[order], "uid": pa.array(uid_l, pa.string()).take(pa.array(order)), "h": h[order]}, schema=CAND))
    return {"m": int(at), "d": int(d)}


def _grow(x: np.ndarray | None, used: int, rows: int, d: int) -> np.ndarray:
    out = np.empty((rows, d), dtype=np.float32)
    if x is not None and used:
        out[:used] = x[:used]
    return out


CHUNK_ROWS = 16_384     # rows per write of a matrix (bounds the staging buffer)
ROW_GROUP = 32_768      # rows per Parquet row group of the work tables (a block reads only its own)


def _write_rows(job: Job, rel: str, x: np.ndarray, order: np.ndarray) -> None:
    """Write ``x[order]`` (float32 rows) to ``rel`` atomically, gathering a chunk at a time."""
    from curation.io.fs import local_staging_file

    with local_staging_file(job.work.fs, job.work.path(rel)) as local, open(local, "wb") as f:
        buf = np.empty((min(CHUNK_ROWS, len(order)), x.shape[1]), dtype=np.float32)
        for a in range(0, len(order), CHUNK_ROWS):
            b = min(len(order), a + CHUNK_ROWS)
            np.take(x, order[a:b], axis=0, out=buf[: b - a], mode="clip")  # indices are in range
            f.write(buf[: b - a].data)


def _read_rows(f, d: int, start: int, out: np.ndarray) -> None:
    """Fill ``out`` (rows x d float32) from the open matrix file ``f``, from row ``start``."""
    f.seek(start * d * 4)
    mv, got = out.reshape(-1).view(np.uint8).data, 0
    while got < len(mv):
        n = f.readinto(mv[got:])
        if not n:
            raise EOFError(f"work file ends before row {start + len(out)}")
        got += n


def _write_table(job: Job, rel: str, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    from curation.io.fs import local_staging_file

    with local_staging_file(job.work.fs, job.work.path(rel), ".parquet") as local:
        pq.write_table(table, local, row_group_size=ROW_GROUP, compression="lz4")


def _read_table_rows(job: Job, rel: str, start: int, end: int) -> pa.Table:
    """Rows ``[start, end)`` of a work table, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    with job.work.fs.open(job.work.path(rel), "rb") as f:
        pf = pq.ParquetFile(f)
        bounds = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        last = int(np.searchsorted(bounds, end, side="left"))
        t = pf.read_row_groups(list(range(first, last)))
    return t.slice(start - int(bounds[first]), end - start)


def _matrix(job: Job, rel: str, d: int, start: int = 0, end: int | None = None) -> np.ndarray:
    """Rows ``[start, end)`` (default: to the end) of a work matrix, read into one array."""
    path = job.work.path(rel)
    if end is None:
        size = job.work.fs.size(path)
        if size is None:
            raise OSError(f"{path}: size unknown")
        end = int(size) // (d * 4)
    out = np.empty((max(0, end - start), d), dtype=np.float32)
    with job.work.fs.open(path, "rb") as f:
        _read_rows(f, d, start, out)
    return out


def fit_centroids(_: int, *, job: Job, plan: SemPlan, groups: list[int]) -> dict[str, int]:
    """Task: first-level k-means on the sample, read one group at a time; writes ``sem/c1.npy``."""
    thr = _threshold(plan.sample_size, plan.candidates)
    picked, at = [], []
    for g in groups:
        t = job.work.read(f"sem/x/g{g:05d}.parquet", columns=["pos", "h"])
        keys = sample_keys(t.column("h").to_numpy(), plan.seed)  # ascending: the file's order
        take = len(keys) if thr is None else int(np.searchsorted(keys, np.uint64(thr)))
        if take:
            picked.append(_matrix(job, f"sem/x/g{g:05d}.f32", plan.dim, 0, take))
            at.append(t.column("pos").to_numpy()[:take])
    xs = np.concatenate(picked) if picked else np.zeros((0, plan.dim), np.float32)
    if at:
        xs = xs[np.argsort(np.concatenate(at), kind="stable")]  # the sample in dataset order
    import os

    threads = max(1, min(plan.fit_threads, os.cpu_count() or 1))  # the only task of its wave
    c = sem._train(xs, plan.first_level_k, plan.niter, plan.seed, threads=threads)
    buf = io.BytesIO()
    np.save(buf, c)
    job.work.write_bytes("sem/c1.npy", buf.getvalue())
    return {"sample": int(len(xs)), "k": int(len(c))}


def _threshold(size: int, n: int) -> int | None:
    return None if size >= n else (int(size) << 64) // n


def assign_group(g: int, *, job: Job, plan: SemPlan) -> list[int]:
    """Task: nearest first-level centroid of group ``g``'s candidates; rows sorted by it.
    Returns the row count per first-level cluster."""
    c = np.load(io.BytesIO(job.work.read_bytes("sem/c1.npy")), allow_pickle=False)
    meta = job.work.read(f"sem/x/g{g:05d}.parquet")
    x = _matrix(job, f"sem/x/g{g:05d}.f32", plan.dim)
    labels, cos = sem._assign(x, c) if len(x) else (np.zeros(0, np.int64), np.zeros(0, np.float32))
    order = np.lexsort((meta.column("pos").to_numpy(), labels))  # by cluster, then dataset order
    _write_rows(job, f"sem/a/g{g:05d}.f32", x, order)
    del x
    take = pa.array(order)
    _write_table(job, f"sem/a/g{g:05d}.parquet", pa.table({
        "pos": meta.column("pos").take(take), "uid": meta.column("uid").take(take),
        "h": meta.column("h").take(take), "cos": cos[order], "label": labels[order]}, schema=ASSIGNED))
    return np.bincount(labels, minlength=len(c)).tolist()


def _dedup_cluster(x: np.ndarray, members: np.ndarray, cos: np.ndarray, cid: int,
                   plan: SemPlan) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup of one cluster: rows ``members`` of ``x`` (dataset order) with their cosine to
    the centroid. Returns (removed rows, the kept row each is a duplicate of), rows of ``x``."""
    order = sem.cluster_order(cos, plan.keep, plan.seed, cid)
    best, arg = sem.cluster_max_earlier(x[members[order]], plan.block)  # the one gather
    removed = best > (1.0 - plan.eps)
    root = sem.resolve_in_cluster(removed, np.where(removed, arg, -1))
    rm = np.flatnonzero(removed)
    return members[order[rm]], members[order[root[rm]]]


Segment = tuple[int, int, int]  # (group, first row, end row) of one cluster in a group's assign file


def cluster_block(item: tuple[int, list[int], list[list[Segment]], list[tuple[int, int, int]]], *,
                  job: Job, plan: SemPlan) -> dict[str, int]:
    """Task: SemDeDup of a block of first-level clusters (see the module docstring).

    ``item`` = (block number, cluster ids, per cluster its segments (group, start, end) in
    group order, per cluster (kc, share, label offset) for ``two_level``).
    """
    b, cids, segs, cells = item
    total = sum(e - s for cl in segs for _, s, e in cl)
    if not total:
        return {"semantic": 0, "clusters": 0}
    x = np.empty((total, plan.dim), dtype=np.float32)
    by_group: dict[int, list[tuple[int, int, int]]] = {}  # group -> (start, end, row in x)
    bounds, at = [], 0
    for cl in segs:
        a = at
        for g, s, e in cl:
            by_group.setdefault(g, []).append((s, e, at))
            at += e - s
        bounds.append((a, at))
    parts: list[tuple[int, pa.Table]] = []
    for g, runs in by_group.items():
        with job.work.fs.open(job.work.path(f"sem/a/g{g:05d}.f32"), "rb") as f:
            for s, e, row in runs:
                _read_rows(f, plan.dim, s, x[row:row + e - s])
        lo, hi = runs[0][0], runs[-1][1]  # a block's clusters are consecutive: one span per group
        t = _read_table_rows(job, f"sem/a/g{g:05d}.parquet", lo, hi)
        parts += [(row, t.slice(s - lo, e - s)) for s, e, row in runs]
    meta = pa.concat_tables([t for _, t in sorted(parts, key=lambda p: p[0])])
    cos = meta.column("cos").to_numpy()
    pos = meta.column("pos").to_numpy()
    h = meta.column("h").to_numpy() if plan.mode != "flat" else None
    uid = meta.column("uid")
    rm_all, par_all, clusters = [], [], 0
    for c, (lo, hi), (kc, share, offset) in zip(cids, bounds, cells):
        if hi == lo:
            continue
        idx = np.arange(lo, hi)
        if plan.mode == "flat":
            groups = [(c, idx, cos[lo:hi])]
        else:
            assert h is not None
            xc = x[lo:hi]
            pick = sem.sample_mask(sample_keys(h[lo:hi], plan.seed, c + 1), share)
            lab, sim = sem._assign(xc, sem._train(xc[pick], kc, plan.niter, plan.seed + c + 1))
            groups = [(offset + int(f), idx[lab == f], sim[lab == f]) for f in np.unique(lab)]
        for cid, members, mcos in groups:
            clusters += 1
            rm, par = _dedup_cluster(x, members, mcos, cid, plan)
            rm_all.append(rm)
            par_all.append(par)
    rm = np.concatenate(rm_all) if rm_all else np.zeros(0, np.int64)
    par = np.concatenate(par_all) if par_all else np.zeros(0, np.int64)
    order = np.argsort(pos[rm], kind="stable")
    rm, par = rm[order], par[order]
    dec = decisions(pos[rm], pos[par], uid.take(pa.array(par)), "semantic")
    for g, part in split_by(dec, group_of(pos[rm], job.group_starts), job.n_groups).items():
        job.work.write(f"final/g{g:05d}/semantic/b{b:05d}.parquet", part)
    return {"semantic": int(len(rm)), "clusters": clusters}


def blocks(counts: list[list[int]], plan: SemPlan, n_tasks: int) -> list[tuple]:
    """Cut the first-level clusters into about ``n_tasks`` blocks of similar pairwise cost;
    each item carries, per cluster, its row range in every group holding some of it
    (``counts[g][c]``: rows of cluster c in group g)."""
    k = len(counts[0]) if counts else 0
    per = np.array(counts, dtype=np.int64).reshape(len(counts), k)
    sizes = per.sum(0)
    if plan.mode == "flat":
        cells = [(0, 0, 0)] * k
    else:
        cells = sem.cell_plan(sizes.tolist(), plan.n_clusters, plan.candidates, plan.sample_size)
    cost = sizes.astype(np.float64) ** 2 + sizes
    target = cost.sum() / max(1, n_tasks)
    starts = np.zeros((len(counts), k + 1), dtype=np.int64)
    starts[:, 1:] = np.cumsum(per, axis=1)
    out, cur, acc = [], [], 0.0
    for c in range(k):
        if sizes[c]:
            cur.append(c)
            acc += cost[c]
        if cur and (acc >= target or c == k - 1):
            segs = [[(g, int(starts[g, i]), int(starts[g, i + 1])) for g in range(len(counts)) if per[g, i]]
                    for i in cur]
            out.append((len(out), cur, segs, [cells[i] for i in cur]))
            cur, acc = [], 0.0
    return out
