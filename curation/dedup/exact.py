"""Distributed dedup, first waves: the per-group scan (pHash, decontamination, routing) and
the exact (sha256) partitions.

* :func:`scan_group` (one task per group of consecutive shards) reads only ``uid``,
  ``sha256``, ``tar_offset``, ``clip_score`` and ``phash`` of its shards, computes missing
  pHashes, removes eval-contaminated samples, and routes every other sample with an image:
  to its exact partition (by sha256 prefix) or, without a sha256, straight to the pHash band
  partitions.
* :func:`exact_partition` (one task per sha256-prefix partition) keeps per sha256 the
  sample with the smallest keep key (the policy of :mod:`curation.dedup.groups`), writes
  the others' decisions, and routes the survivors to the pHash band partitions.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup.work import (
    DECISION,
    ROW_BITS,
    Work,
    decisions,
    group_of,
    keep_keys,
    key_uid,
    sha_partition,
    split_by,
)
from curation.errors import DatasetError


@dataclass
class Job:
    """What every dedup task needs to know (small and picklable: no per-row data)."""

    url: str
    storage_options: dict[str, Any]
    version: int
    work: Work
    shard_ids: list[int]
    group_starts: list[int]        # first shard index of each group
    n_parts: int                   # exact / pHash band / components partitions
    methods: list[str]
    radius: int
    compute_phash: bool = False    # (re)compute every pHash from the images
    keep_phash: bool = False       # a phash column exists or pHash dedup runs: hashes are outputs
    eval_eps: float | None = None  # decontaminate (eval embeddings in the work folder)

    def dataset(self):
        from curation.io import Dataset

        return Dataset(self.url, self.storage_options, version=self.version)

    def group_shards(self, g: int) -> range:
        end = self.group_starts[g + 1] if g + 1 < len(self.group_starts) else len(self.shard_ids)
        return range(self.group_starts[g], end)

    @property
    def n_groups(self) -> int:
        return len(self.group_starts)


def shard_embeddings(ds, shard_id: int, uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n x d float32, has-embedding mask) of one shard, joined on uid (as the reference does)."""
    return align_embeddings(ds.read_embeddings(shard_id, columns=["uid", "image_emb"]), uids)


def align_embeddings(t, uids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(n x d float32, has-embedding mask) of an ``uid, image_emb`` table joined on ``uids``;
    null or non-finite vectors count as missing (zeros in the matrix)."""
    col = t.column("image_emb").combine_chunks()
    d = col.type.list_size
    flat = col.values.slice(col.offset * d, len(col) * d).to_numpy(zero_copy_only=False)
    emb = np.asarray(flat, dtype=np.float32).reshape(len(col), d)
    valid = col.is_valid().to_numpy(zero_copy_only=False) & np.isfinite(emb).all(1)
    emb_uids = t.column("uid").to_pylist()
    if emb_uids == uids:  # the usual case: row-aligned with the metadata
        return np.where(valid[:, None], emb, np.float32(0)), valid
    at = {u: i for i, u in enumerate(emb_uids)}
    rows = np.array([at.get(u, -1) for u in uids], dtype=np.int64)
    has = rows >= 0
    has[has] = valid[rows[has]]
    out = np.zeros((len(uids), d), dtype=np.float32)
    out[has] = emb[rows[has]]
    return out, has


def phash_missing(g: int, *, job: Job) -> bool:
    """Task: does any sample with an image in group ``g`` lack a stored pHash?"""
    ds = job.dataset()
    for si in job.group_shards(g):
        t = ds.read_meta(job.shard_ids[si], columns=["tar_offset", "phash"])
        img = t.column("tar_offset").is_valid().to_numpy(zero_copy_only=False)
        has = t.column("phash").is_valid().to_numpy(zero_copy_only=False)
        if (img & ~has).any():
            return True
    return False


def _codes(hexes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    ok = np.array([h is not None for h in hexes], dtype=bool)
    codes = np.array([int(h, 16) if h is not None else 0 for h in hexes], dtype=np.uint64)
    return codes, ok


def scan_group(g: int, *, job: Job) -> dict[str, int]:
    """Task: scan one group of shards (see the module docstring). Returns small counts."""
    from curation.dedup.components import write_bands

    ds = job.dataset()
    cols = [c for c in ("uid", "sha256", "tar_offset", "clip_score", "phash") if c in ds.columns]
    parts: dict[str, list] = {"pos": [], "uid": [], "sha": [], "score": [], "code": [], "has_code": [], "alive": []}
    removed_eval: list[np.ndarray] = []
    with_image = 0
    ev = None
    if job.eval_eps is not None:
        ev = np.load(io.BytesIO(job.work.read_bytes("eval.npy")), allow_pickle=False)
    for si in job.group_shards(g):
        sid = job.shard_ids[si]
        meta = ds.read_meta(sid, columns=cols)
        uids = meta.column("uid").to_pylist()
        n = len(uids)
        has_img = meta.column("tar_offset").is_valid().to_numpy(zero_copy_only=False)
        with_image += int(has_img.sum())
        pos = (np.int64(si) << np.int64(ROW_BITS)) | np.arange(n, dtype=np.int64)
        hexes: list[str | None] | None = None
        if job.compute_phash:
            from curation.dedup.phash import phash_shard

            got = phash_shard(sid, url=job.url, storage_options=job.storage_options, version=job.version)
            by_uid = dict(zip(got["uid"], got["phash"]))
            hexes = [by_uid.get(u) for u in uids]
        elif "phash" in cols:
            hexes = meta.column("phash").to_pylist()
        if job.keep_phash:
            job.work.write(f"rows/s{si:06d}.parquet", pa.table({"phash": pa.array(hexes or [None] * n, pa.string())}))
        alive = has_img.copy()
        if ev is not None and job.eval_eps is not None:
            from curation.dedup.decontam import contaminated

            emb, has_emb = shard_embeddings(ds, sid, uids)
            cand = np.flatnonzero(alive & has_emb)
            mask, _ = contaminated(emb[cand], ev, job.eval_eps)
            alive[cand[mask]] = False
            removed_eval.append(pos[cand[mask]])
        code, has_code = _codes(hexes if hexes is not None else [None] * n)
        scores = (meta.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float64)
                  if "clip_score" in cols else None)
        parts["pos"].append(pos)
        parts["uid"].extend(uids)
        parts["sha"].extend(meta.column("sha256").to_pylist() if "sha256" in cols else [None] * n)
        parts["score"].append(scores if scores is not None else np.full(n, np.nan))
        parts["code"].append(code)
        parts["has_code"].append(has_code)
        parts["alive"].append(alive)
    uids = parts["uid"]
    if len(set(uids)) != len(uids):
        raise DatasetError(f"{job.url}: column 'uid' is not unique; dedup needs unique uids")
    pos = np.concatenate(parts["pos"]) if parts["pos"] else np.zeros(0, np.int64)
    alive = np.concatenate(parts["alive"]) if parts["alive"] else np.zeros(0, bool)
    code = np.concatenate(parts["code"]) if parts["code"] else np.zeros(0, np.uint64)
    has_code = np.concatenate(parts["has_code"]) if parts["has_code"] else np.zeros(0, bool)
    score = np.concatenate(parts["score"]) if parts["score"] else np.zeros(0)
    ev_pos = np.concatenate(removed_eval) if removed_eval else np.zeros(0, np.int64)
    if len(ev_pos):
        job.work.write(f"final/g{g:05d}/eval/scan.parquet", decisions(ev_pos, None, None, "eval_contamination"))
    idx = np.flatnonzero(alive)
    keys = keep_keys([uids[i] for i in idx], score[idx])
    sha = [parts["sha"][i] for i in idx]
    with_sha = np.array([s is not None for s in sha], dtype=bool) if len(idx) else np.zeros(0, bool)
    if "exact" in job.methods and with_sha.any():
        sel = np.flatnonzero(with_sha)
        t = pa.table({"pos": pos[idx[sel]], "key": [keys[i] for i in sel], "sha": [sha[i] for i in sel],
                      "code": code[idx[sel]], "has_code": has_code[idx[sel]]})
        for p, part in split_by(t, sha_partition([sha[i] for i in sel], job.n_parts), job.n_parts).items():
            job.work.write(f"ex/p{p:05d}/g{g:05d}.parquet", part)
    if "phash" in job.methods:
        direct = ~with_sha if "exact" in job.methods else np.ones(len(idx), dtype=bool)
        sel = np.flatnonzero(direct & has_code[idx])
        write_bands(job, f"g{g:05d}", pos[idx[sel]], [keys[i] for i in sel], code[idx[sel]])
    return {"rows": int(len(pos)), "with_image": with_image, "eval_contamination": int(len(ev_pos))}


_EXACT_SQL = """
SELECT pos, key, code, has_code, min(key) OVER w AS mk, arg_min(pos, key) OVER w AS mp
FROM t WINDOW w AS (PARTITION BY sha)
"""


def exact_partition(p: int, *, job: Job) -> dict[str, int]:
    """Task: exact dedup of one sha256-prefix partition (see the module docstring)."""
    import duckdb

    from curation.dedup.components import write_bands

    schema = pa.schema([("pos", pa.int64()), ("key", pa.string()), ("sha", pa.string()),
                        ("code", pa.uint64()), ("has_code", pa.bool_())])
    t = job.work.read_dir(f"ex/p{p:05d}", schema)
    con = duckdb.connect()
    con.register("t", t)
    res = con.sql(_EXACT_SQL).to_arrow_table()
    con.close()
    key = res.column("key").to_pylist()
    mk = res.column("mk").to_pylist()
    rm = np.array([a != b for a, b in zip(key, mk)], dtype=bool)
    pos = res.column("pos").to_numpy()
    mp = res.column("mp").to_numpy()
    _write_routed(job, "exact", f"p{p:05d}", decisions(pos[rm], mp[rm], [key_uid(mk[i]) for i in np.flatnonzero(rm)],
                                                        "exact"))
    if "phash" in job.methods:
        keep = np.flatnonzero(~rm & res.column("has_code").to_numpy(zero_copy_only=False))
        write_bands(job, f"e{p:05d}", pos[keep], [key[i] for i in keep], res.column("code").to_numpy()[keep])
    return {"exact": int(rm.sum())}


def _write_routed(job: Job, method: str, name: str, dec: pa.Table) -> None:
    """Decisions by the removed row's group (``dec/<method>/g*``: who is gone) and by the
    parent's group (``q/<method>/g*``: what the resolution rounds look up)."""
    if not dec.num_rows:
        return
    own = group_of(dec.column("pos").to_numpy(), job.group_starts)
    for g, part in split_by(dec, own, job.n_groups).items():
        job.work.write(f"dec/{method}/g{g:05d}/{name}.parquet", part)
    par = group_of(dec.column("ppos").to_numpy(), job.group_starts)
    for g, part in split_by(dec, par, job.n_groups).items():
        job.work.write(f"q/{method}/g{g:05d}/{name}.parquet", part)


__all__ = ["DECISION", "Job", "exact_partition", "phash_missing", "scan_group", "shard_embeddings"]
