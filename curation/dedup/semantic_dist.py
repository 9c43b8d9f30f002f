"""Distributed SemDeDup: the steps of :mod:`curation.dedup.semantic`, with no n x d matrix
in any process.

1. :func:`prepare_group` (one task per group of shards): the candidates (samples with an
   image and an embedding, not removed by decontamination, exact or pHash), normalised,
   written to the work folder with their sampling keys (uid hashes), in key order.
2. :func:`fit_centroids` (one task): k-means on the sample only (``sample_size`` points
   chosen by :func:`~curation.dedup.semantic.sample_mask`: a prefix of each group's file,
   so only the sample is read), put back in dataset order.
3. :func:`assign_group` (one task per group): nearest centroid of every candidate; rows are
   written sorted by cluster (coarse cell for ``two_level``) with per-cluster counts, so a
   cluster's rows are one byte range per group file.
4. :func:`cluster_block` (one task per block of clusters or cells): gathers its clusters'
   rows from every group (dataset order), for ``two_level`` fits and assigns the cell's
   fine clusters, then orders each cluster, runs the blocked pairwise step, and resolves
   each removed item to a kept one inside its cluster. Decisions go to the removed rows'
   groups.

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
    xs, pos_l, uid_l = [], [], []
    d = int((ds.embeddings or {}).get("dim") or 0)
    for si in job.group_shards(g):
        sid = job.shard_ids[si]
        meta = ds.read_meta(sid, columns=["uid", "tar_offset"])
        uids = meta.column("uid").to_pylist()
        pos = (np.int64(si) << np.int64(ROW_BITS)) | np.arange(len(uids), dtype=np.int64)
        emb, has_emb = shard_embeddings(ds, sid, uids)
        d = emb.shape[1]
        ok = meta.column("tar_offset").is_valid().to_numpy(zero_copy_only=False) & has_emb & ~np.isin(pos, gone)
        sel = np.flatnonzero(ok)
        xs.append(sem.l2_normalize(emb[sel]))
        pos_l.append(pos[sel])
        uid_l.extend(uids[i] for i in sel)
    x = np.concatenate(xs) if xs else np.zeros((0, d), np.float32)
    pos = np.concatenate(pos_l) if pos_l else np.zeros(0, np.int64)
    h = uid_hash(uid_l)
    # sorted by sampling key: the k-means sample of every group is a prefix of its file
    order = np.argsort(sample_keys(h, plan_seed), kind="stable")
    job.work.write_bytes(f"sem/x/g{g:05d}.f32", np.ascontiguousarray(x[order], dtype=np.float32).tobytes())
    job.work.write(f"sem/x/g{g:05d}.parquet", pa.table({
        "pos": pos[order], "uid": pa.array(uid_l, pa.string()).take(pa.array(order)), "h": h[order]}, schema=CAND))
    return {"m": int(len(x)), "d": int(d)}


def _matrix(job: Job, rel: str, d: int, start: int = 0, end: int | None = None) -> np.ndarray:
    raw = job.work.read_bytes(rel, start * d * 4, None if end is None else end * d * 4)
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, d)


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
    job.work.write_bytes(f"sem/a/g{g:05d}.f32", np.ascontiguousarray(x[order]).tobytes())
    job.work.write(f"sem/a/g{g:05d}.parquet", pa.table({
        "pos": meta.column("pos").take(pa.array(order)), "uid": meta.column("uid").take(pa.array(order)),
        "h": meta.column("h").take(pa.array(order)), "cos": cos[order], "label": labels[order]}, schema=ASSIGNED))
    return np.bincount(labels, minlength=len(c)).tolist()


def _dedup_cluster(x: np.ndarray, cos: np.ndarray, cid: int, plan: SemPlan) -> tuple[np.ndarray, np.ndarray]:
    """(removed member indices, the kept member each is a duplicate of), members in dataset order."""
    order = sem.cluster_order(cos, plan.keep, plan.seed, cid)
    best, arg = sem.cluster_max_earlier(x[order], plan.block)
    removed = best > (1.0 - plan.eps)
    root = sem.resolve_in_cluster(removed, np.where(removed, arg, -1))
    rm = np.flatnonzero(removed)
    return order[rm], order[root[rm]]


def cluster_block(item: tuple[int, list[int], list[tuple[int, int]], list[tuple[int, int, int]]], *,
                  job: Job, plan: SemPlan) -> dict[str, int]:
    """Task: SemDeDup of a block of first-level clusters (see the module docstring).

    ``item`` = (block number, cluster ids, per group the (start, end) rows of the block,
    per cluster (kc, share, label offset) for ``two_level``).
    """
    b, cids, ranges, cells = item
    xs, metas = [], []
    for g, (s, e) in enumerate(ranges):
        if e > s:
            xs.append(_matrix(job, f"sem/a/g{g:05d}.f32", plan.dim, s, e))
            metas.append(job.work.read(f"sem/a/g{g:05d}.parquet").slice(s, e - s))
    if not xs:
        return {"semantic": 0, "clusters": 0}
    x = np.concatenate(xs)
    meta = pa.concat_tables(metas)
    label = meta.column("label").to_numpy()
    cos = meta.column("cos").to_numpy()
    pos = meta.column("pos").to_numpy()
    uid = meta.column("uid")
    rm_all, par_all, clusters = [], [], 0
    for c, (kc, share, offset) in zip(cids, cells):
        idx = np.flatnonzero(label == c)
        if not len(idx):
            continue
        if plan.mode == "flat":
            groups = [(c, idx, cos[idx])]
        else:
            xc = x[idx]
            h = meta.column("h").to_numpy()[idx]
            pick = sem.sample_mask(sample_keys(h, plan.seed, c + 1), share)
            lab, sim = sem._assign(xc, sem._train(xc[pick], kc, plan.niter, plan.seed + c + 1))
            groups = [(offset + int(f), idx[lab == f], sim[lab == f]) for f in np.unique(lab)]
        for cid, members, mcos in groups:
            clusters += 1
            rm, par = _dedup_cluster(x[members], mcos, cid, plan)
            rm_all.append(members[rm])
            par_all.append(members[par])
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
    each item carries its per-group row ranges (``counts[g][c]``: rows of cluster c in group g)."""
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
            lo, hi = cur[0], cur[-1] + 1
            ranges = [(int(starts[g, lo]), int(starts[g, hi])) for g in range(len(counts))]
            out.append((len(out), cur, ranges, [cells[i] for i in cur]))
            cur, acc = [], 0.0
    return out
