"""Distributed ``dup_of`` resolution, and the per-shard columns the write-out tasks build.

Methods run in a fixed order (exact, pHash, semantic), and a method's parent is always a
sample alive after that method, so a removed sample's chain of parents is at most
exact -> pHash -> semantic -> kept; semantic chains are already resolved inside their
cluster (:func:`curation.dedup.semantic.resolve_in_cluster`). Two lookup rounds therefore
do the reference's pointer jumping exactly:

A. pHash decisions whose parent was later removed semantically take that one's parent;
B. exact decisions whose parent was later removed (pHash, resolved by A, or semantic)
   take that one's parent.

Each round is one task per group: its queries are the decisions whose *parent* lies in
the group (routed there when written), its lookup table the final decisions of the
group's own rows. Outputs go to the removed rows' groups (``final/g*/<method>/``).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.dedup.exact import Job
from curation.dedup.work import DECISION, ROW_BITS, group_of, split_by


def resolve_round(g: int, *, job: Job, method: str, lookups: list[str]) -> int:
    """Task: resolve ``method``'s decisions whose parent is in group ``g``; returns how many moved."""
    q = job.work.read_dir(f"q/{method}/g{g:05d}", DECISION)
    if not q.num_rows:
        return 0
    lk = pa.concat_tables([job.work.read_dir(f"final/g{g:05d}/{m}", DECISION) for m in lookups])
    ppos = q.column("ppos").to_numpy()
    puid = q.column("puid")
    moved = 0
    if lk.num_rows:
        lpos = lk.column("pos").to_numpy()
        order = np.argsort(lpos)
        lpos = lpos[order]
        at = np.minimum(np.searchsorted(lpos, ppos), len(lpos) - 1)
        hit = lpos[at] == ppos
        src = order[at[hit]]
        ppos = ppos.copy()
        ppos[hit] = lk.column("ppos").to_numpy()[src]
        names = puid.to_pylist()
        new = lk.column("puid").take(pa.array(src)).to_pylist()
        for i, u in zip(np.flatnonzero(hit), new):
            names[i] = u
        puid = pa.array(names, pa.string())
        moved = int(hit.sum())
    out = pa.table({"pos": q.column("pos"), "ppos": pa.array(ppos, pa.int64()), "puid": puid,
                    "reason": q.column("reason")}, schema=DECISION)
    for own, part in split_by(out, group_of(out.column("pos").to_numpy(), job.group_starts), job.n_groups).items():
        job.work.write(f"final/g{own:05d}/{method}/r{g:05d}.parquet", part)
    return moved


def shard_columns(job: Job, shard_index: int, rows: int) -> dict[str, pa.Array]:
    """``dup_of``, ``dedup_reason`` (and ``phash`` when it is an output) for one shard's rows."""
    g = int(group_of(np.array([shard_index << ROW_BITS], dtype=np.int64), job.group_starts)[0])
    dup_of: list[str | None] = [None] * rows
    reason: list[str | None] = [None] * rows
    for m in ("eval", "exact", "phash", "semantic"):
        t = job.work.read_dir(f"final/g{g:05d}/{m}", DECISION)
        if not t.num_rows:
            continue
        pos = t.column("pos").to_numpy()
        sel = np.flatnonzero((pos >> ROW_BITS) == shard_index)
        rows_at = (pos[sel] & ((1 << ROW_BITS) - 1)).tolist()
        for r, u, why in zip(rows_at, t.column("puid").take(pa.array(sel)).to_pylist(),
                             t.column("reason").take(pa.array(sel)).to_pylist()):
            dup_of[r], reason[r] = u, why
    out = {"dup_of": pa.array(dup_of, pa.string()), "dedup_reason": pa.array(reason, pa.string())}
    if job.keep_phash:
        out["phash"] = job.work.read(f"rows/s{shard_index:06d}.parquet").column("phash").combine_chunks()
    return out
