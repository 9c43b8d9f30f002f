"""The ``dedup`` stage: adds ``phash``, ``dup_of`` and ``dedup_reason`` as a new metadata version.

Tars are never touched. Every row is kept (duplicates are data with a reason, not drops):
a sample is a duplicate iff ``dedup_reason`` is not null; ``dup_of`` names the uid of the
kept sample of its group (null for kept samples and for ``eval_contamination``, whose
match lies outside the dataset). The decision is global and deterministic (see
:mod:`curation.dedup.core`), so a resumed run writes the same values for pending shards.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.dedup.config import DedupConfig
from curation.dedup.core import DedupResult, find_duplicates
from curation.io import Dataset
from curation.runner.stage import Stage, StageContext, StageStats

NEW_COLUMNS = ("phash", "dup_of", "dedup_reason")


class DedupStage(Stage):
    """Exact (sha256), perceptual (pHash + multi-index hashing) and semantic (SemDeDup) dedup,
    plus evaluation-set decontamination."""

    name = "dedup"
    Config = DedupConfig

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        if ds is None:
            from curation.errors import ConfigError

            raise ConfigError("dedup: needs an input dataset")
        ctx.stats = ctx.stats or StageStats(self.name)
        vw = ds.new_version(self.name, self.config.model_dump(mode="json"))
        result = find_duplicates(ds, self.config)
        write_columns(ds, vw, result, ctx)
        removed = result.stats["removed"]
        ctx.stats.samples_in = ds.num_samples
        ctx.stats.samples_out = ds.num_samples  # rows are flagged, never dropped
        for why, count in removed.items():
            ctx.stats.dropped[f"dup_{why}"] += count
        ctx.stats.shards = len(ds.shard_ids)
        ctx.stats.extra.update({"dedup": result.stats})
        return vw.commit(stats=ctx.stats.to_dict())


def write_columns(ds: Dataset, vw, result: DedupResult, ctx: StageContext) -> None:
    """Write each pending shard's table with the new columns (same rows, same order)."""
    by_uid = {u: i for i, u in enumerate(result.uid)}
    pending = set(vw.pending_shards())
    done, total, samples = 0, len(ds.shard_ids), 0
    for sid in ds.shard_ids:
        if sid in pending:
            t = ds.read_meta(sid)
            rows = [by_uid[u] for u in t.column("uid").to_pylist()]
            new: dict[str, Any] = {
                "phash": [result.phash[i] for i in rows] if result.phash is not None else [None] * len(rows),
                "dup_of": [result.dup_of[i] for i in rows],
                "dedup_reason": [result.dedup_reason[i] for i in rows],
            }
            for name in NEW_COLUMNS:
                if name == "phash" and result.phash is None and name in t.column_names:
                    continue  # keep hashes taken at download time when pHash dedup did not run
                if name in t.column_names:
                    t = t.drop_columns([name])
                t = t.append_column(name, pa.array(new[name], type=pa.string()))
            vw.write_meta(sid, t)
            samples = t.num_rows
        else:
            samples = 0
        done += 1
        ctx.progress(done, total, samples)  # samples: this shard's rows (the bar adds them up)
