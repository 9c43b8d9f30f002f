"""The ``dedup`` stage: adds ``phash``, ``dup_of`` and ``dedup_reason`` as a new metadata version.

Tars are never touched. Every row is kept (duplicates are data with a reason, not drops):
a sample is a duplicate iff ``dedup_reason`` is not null; ``dup_of`` names the uid of the
kept sample of its group (null for kept samples and for ``eval_contamination``, whose
match lies outside the dataset). The decision is global and deterministic (see
:mod:`curation.dedup.core`).

Data flow: :meth:`DedupStage.plan` runs the distributed decision (:func:`find_duplicates`,
waves of tasks through :meth:`Stage.map`) into ``meta/v<N>/_work/`` of the new version and
returns only counts; then, per the stage contract, one task per shard joins its rows with
the decisions and writes its own metadata. A finished decision (``_work/_done.json``) is
reused when the stage resumes; the work folder is removed before the version commits.
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter
from typing import Any

import pyarrow as pa

from curation.dedup.config import DedupConfig
from curation.dedup.core import find_duplicates, make_job, resolve_methods
from curation.dedup.resolve import shard_columns
from curation.dedup.work import Work
from curation.io import Dataset
from curation.io.fs import atomic_write_bytes, join
from curation.io.writer import VersionWriter
from curation.stage import Shard, ShardResult, ShardStage, StageContext, StageStats

NEW_COLUMNS = ("phash", "dup_of", "dedup_reason")
DONE = "_done.json"


class DedupStage(ShardStage):
    """Exact (sha256), perceptual (pHash + multi-index hashing) and semantic (SemDeDup) dedup,
    plus evaluation-set decontamination."""

    name = "dedup"
    Config = DedupConfig

    def _cpus(self) -> int:
        if self.executor_setting() == "local":
            return os.cpu_count() or 1
        return max(1, int(self.cluster_resources().get("CPU", 1)))

    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        cfg: DedupConfig = self.config  # type: ignore[assignment]
        methods = resolve_methods(ds, cfg)  # ConfigError before anything is written
        vw = VersionWriter(ds, self.name, self.version_config(ds, None))  # the version run() continues
        work = Work(join(ds.url, f"meta/v{vw.version}/_work"), ds.storage_options)
        stats_rel = join(ds.root, f"meta/v{vw.version}/_dedup.json")
        job = make_job(ds, cfg, work, methods)
        if not vw.pending_shards() and ds.fs.exists(stats_rel):
            done = json.loads(ds.fs.cat_file(stats_rel))
        elif work.exists(DONE):
            done = json.loads(work.read_bytes(DONE))
        else:
            # every wave runs as tasks (even a single-item one): the driver never reads rows itself
            remote = functools.partial(self.map, local=self.executor_setting() == "local")
            stats = find_duplicates(ds, cfg, work=work, map=remote, cpus=self._cpus(), job=job)
            done = {"stats": stats, "group_starts": job.group_starts, "n_parts": job.n_parts}
            blob = json.dumps(done).encode()
            work.write_bytes(DONE, blob)
            atomic_write_bytes(ds.fs, stats_rel, blob)
        # the layout the decisions were written in wins (rows_per_task may have changed since)
        job.group_starts, job.n_parts = list(done["group_starts"]), int(done["n_parts"])
        return {"job": job, "stats": done["stats"]}

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        job = plan["job"]
        rows = shard.meta.num_rows
        cols = shard_columns(job, job.shard_ids.index(shard.id), rows)
        if "phash" not in cols:
            cols["phash"] = pa.nulls(rows, pa.string())
        reasons = Counter(r for r in cols["dedup_reason"].to_pylist() if r is not None)
        return ShardResult(columns={c: cols[c] for c in NEW_COLUMNS},
                           stats={"dropped": {f"dup_{r}": n for r, n in reasons.items()}})

    def finish(self, ds: Dataset, plan: dict[str, Any], stats: StageStats) -> None:
        stats.extra["dedup"] = plan["stats"]
        plan["job"].work.clear()
