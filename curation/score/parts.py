"""The GPU split layout's write path: model actors write their own results, shard by shard.

In the split layout (Ray Data read tasks -> model actors) one shard's rows reach the actors
in chunks, possibly several actors. So each actor writes what it embedded as small *part*
files, ``emb/v<N>/_parts/<shard>/<rows>-<hash>.parquet`` (``uid``, ``clip_score``,
``score_error``, ``image_emb``, ``text_emb``; names derive from the content, so a retried
batch rewrites the same name), and after each write checks whether the shard's parts now
cover every attempted row. The actor that completes a shard assembles it (parent metadata
+ parts -> new metadata + row-aligned embeddings, through the stage's own commit path) in a
background thread, so the GPU keeps working, removes the parts and returns the shard's small
commit record. The driver sees commit records only, never rows.

Safety: parts are only added while the job runs, an in-job assembly commits only a shard
whose parts cover *every* attempted row, and a shard is written by the same deterministic
function whoever assembles it, so two actors racing on one shard write identical bytes. Shards
the job did not complete (a tar that lacks members, a job cut short) are assembled after the
job by :func:`assemble_leftover` from whatever parts exist; missing rows then get
``missing_image``.
"""
from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.io import format as fmt
from curation.io.fs import join, local_staging_file
from curation.score.assemble import Results, attempted_mask, fixed_list
from curation.stage.base import record_path

PARTS_DIR = "_parts"


def parts_root(version: int) -> str:
    """The parts folder of version ``version``, relative to the dataset root."""
    return f"emb/v{version}/{PARTS_DIR}"


class PartsState:
    """``process_shard``'s state when results come from part files instead of a model.

    Args:
        job: the stage's shard job (dataset, version, plan); :meth:`results` reads its parts.
        complete_only: refuse (raise :class:`Incomplete`) when the parts do not cover every
            attempted row: the in-job rule. False after the job (leftovers).
    """

    def __init__(self, job: Any, complete_only: bool):
        self.job, self.complete_only = job, complete_only

    def results(self, shard_id: int, meta: pa.Table) -> Results:
        ds = self.job.ds
        folder = join(ds.root, parts_root(self.job.version), f"{shard_id:06d}")
        out: Results = {}
        files = sorted(p for p in (ds.fs.ls(folder, detail=False) if ds.fs.exists(folder) else [])
                       if p.endswith(".parquet"))
        for p in files:
            with ds.fs.open(p, "rb") as f:
                t = pq.read_table(f)
            ie = t.column("image_emb").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
            te = t.column("text_emb").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
            for k, (uid, s, err) in enumerate(zip(t.column("uid").to_pylist(), t.column("clip_score").to_pylist(),
                                                  t.column("score_error").to_pylist())):
                out.setdefault(uid, (s, err, ie[k], te[k]))
        if self.complete_only:
            want = set(np.asarray(meta.column("uid").to_pylist(), dtype=object)[attempted_mask(meta)])
            if not want <= out.keys():
                raise Incomplete(shard_id)
        return out


class Incomplete(Exception):
    """An in-job assembly found a shard's parts not (yet) complete: nothing is written."""


class ShardSink:
    """Inside a model actor: write each embedded batch as parts; commit shards it completes.

    Args:
        job: the stage's shard job; ``job.run(shard_id, PartsState(...))`` commits a shard
            exactly as every other path does (record first, metadata last).
        background: assemble in a thread so the model keeps running (GPU actors); an
            assembly the job outlives is redone after it. False: inside the call that
            completed the shard, so its record always comes back with that batch.
    """

    def __init__(self, job: Any, background: bool = False):
        self.job = job
        self.ds = job.ds
        self.root = join(self.ds.root, parts_root(job.version))
        self._expected: dict[int, int] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="score-commit") if background else None
        self._futures: list[Future] = []
        self._lock = threading.Lock()
        self._started: set[int] = set()

    def expected(self, sid: int) -> int:
        """Attempted rows of shard ``sid`` (read once per actor)."""
        if sid not in self._expected:
            meta = self.ds.read_meta(sid, columns=["status", "tar_offset"])
            self._expected[sid] = int(attempted_mask(meta).sum())
        return self._expected[sid]

    def add(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Write ``batch`` (embedder output) as one part per shard; return the commit records
        of shards assembled since the last call."""
        shards = np.asarray(batch["shard"])
        for sid in sorted({int(s) for s in shards}):
            idx = np.flatnonzero(shards == sid)
            self._write_part(sid, {k: np.asarray(v)[idx] for k, v in batch.items()})
            if self._covered(sid) < self.expected(sid):
                continue
            with self._lock:
                if sid in self._started:
                    continue
                self._started.add(sid)
            if self._pool is None:
                done: Future = Future()
                done.set_result(self._commit(sid))
                self._futures.append(done)
            else:
                self._futures.append(self._pool.submit(self._commit, sid))
        return self.finished()

    def finished(self) -> list[dict[str, Any]]:
        """Commit records of assemblies done so far (each returned once)."""
        out, left = [], []
        for f in self._futures:
            if f.done():
                rec = f.result()
                if rec is not None:
                    out.append(rec)
            else:
                left.append(f)
        self._futures = left
        return out

    def _write_part(self, sid: int, rows: dict[str, Any]) -> None:
        uids = [str(u) for u in rows["uid"]]
        digest = hashlib.sha1("\0".join(uids).encode()).hexdigest()[:16]
        dim = int(np.asarray(rows["image_emb"]).shape[-1])
        t = pa.table({"uid": pa.array(uids, pa.string()),
                      "clip_score": pa.array(np.asarray(rows["clip_score"], dtype=np.float32)),
                      "score_error": pa.array([str(e) for e in rows["score_error"]], pa.string()),
                      "image_emb": fixed_list(list(np.asarray(rows["image_emb"], dtype=np.float32)), dim),
                      "text_emb": fixed_list(list(np.asarray(rows["text_emb"], dtype=np.float32)), dim)})
        path = join(self.root, f"{sid:06d}", f"{len(uids):06d}-{digest}.parquet")
        with local_staging_file(self.ds.fs, path, ".parquet") as local:
            pq.write_table(t, local, compression="zstd")

    def _covered(self, sid: int) -> int:
        """Rows in the shard's parts, from their names (may count a retried batch twice)."""
        folder = join(self.root, f"{sid:06d}")
        names = [p.rsplit("/", 1)[-1] for p in self.ds.fs.ls(folder, detail=False)]
        return sum(int(n.split("-", 1)[0]) for n in names if n.endswith(".parquet") and n[:6].isdigit())

    def _commit(self, sid: int) -> dict[str, Any] | None:
        if _committed(self.job, sid):
            return None
        try:
            rec = self.job.run(sid, PartsState(self.job, complete_only=True))
        except Incomplete:
            with self._lock:
                self._started.discard(sid)  # a later part may complete it
            return None
        except FileNotFoundError:  # another actor committed it and removed the parts meanwhile
            return None
        remove_parts(self.job, sid)
        return rec


def _committed(job: Any, sid: int) -> bool:
    """Whether shard ``sid`` of the job's version is committed (its metadata exists)."""
    return job.ds.fs.exists(join(job.ds.root, fmt.meta_file(job.version, sid)))


def remove_parts(job: Any, sid: int | None = None) -> None:
    """Delete one shard's parts (after its commit), or the whole parts folder (None)."""
    folder = join(job.ds.root, parts_root(job.version)) + ("" if sid is None else f"/{sid:06d}")
    try:
        if job.ds.fs.exists(folder):
            job.ds.fs.rm(folder, recursive=True)
    except FileNotFoundError:
        pass


def assemble_leftover(shard_id: int, *, job: Any) -> dict[str, Any]:
    """After the job: commit a shard from whatever parts exist (missing rows get reasons)."""
    if _committed(job, shard_id):
        rec_path = join(job.ds.root, record_path(job.version, shard_id))
        try:
            return json.loads(job.ds.fs.cat_file(rec_path))
        except FileNotFoundError:
            pass
    rec = job.run(shard_id, PartsState(job, complete_only=False))
    remove_parts(job, shard_id)
    return rec
