"""``reshard``: materialise a compact new dataset of the kept samples.

Selection: samples with an image whose ``keep`` is true (when the column exists) and that
the dedup stage did not remove (``dedup_reason`` null, when it exists), or a custom ``where`` predicate.
The final caption goes to ``caption`` and ``.txt`` (the synthetic one when
``caption_source`` says so; the raw one is kept as ``raw_caption``). uids are preserved,
keys, shards and offsets are new. Output shards are planned deterministically from the
input order and written as independent Ray tasks, each committed atomically, so a rerun
after a crash skips finished shards and yields identical bytes.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from curation.config import StageConfig
from curation.errors import ConfigError
from curation.io.dataset import Dataset
from curation.io.query import query
from curation.io.writer import DatasetWriter
from curation.runner.stage import Stage, StageContext

_DROP = {"key", "shard", "tar_offset", "tar_size"}


class ReshardConfig(StageConfig):
    """Options of ``reshard``."""

    samples_per_shard: int = Field(10_000, gt=0)
    where: str | None = None          # default: keep AND dedup_reason IS NULL (columns that exist)
    output: str | None = None         # default: <pipeline output>/curated


def selection_sql(ds: Dataset, where: str | None) -> str:
    cols = set(ds.columns)
    conds = ["tar_offset IS NOT NULL"]
    if where:
        conds.append(f"({where})")
    else:
        if "keep" in cols:
            conds.append("keep")
        if "dedup_reason" in cols:  # also drops eval contamination (which has no dup_of)
            conds.append("dedup_reason IS NULL")
        elif "dup_of" in cols:
            conds.append("dup_of IS NULL")
    return " AND ".join(conds)


def plan(ds: Dataset, cfg: ReshardConfig) -> list[list[dict[str, Any]]]:
    """The selected rows, in input order, cut into output shards."""
    sql = f"SELECT * FROM samples WHERE {selection_sql(ds, cfg.where)} ORDER BY shard, tar_offset"
    rows = query(ds, sql).to_pylist()
    n = cfg.samples_per_shard
    return [rows[i:i + n] for i in range(0, len(rows), n)]


def final_caption(row: dict[str, Any]) -> str | None:
    if row.get("caption_source") == "synthetic" and row.get("synthetic_caption"):
        return row["synthetic_caption"]
    return row.get("caption")


def _write_shard(job: tuple[int, list[dict]], *, src_url: str, src_opts: dict, out: str,
                 out_opts: dict, config: dict) -> int:
    shard_id, rows = job
    src = Dataset(src_url, src_opts)
    w = DatasetWriter(out, stage="reshard", config=config, storage_options=out_opts)
    if w.is_committed(shard_id):
        return len(rows)
    images = src.read_images(rows)
    with w.shard(shard_id) as sw:
        for row, img in zip(rows, images):
            new = {k: v for k, v in row.items() if k not in _DROP}
            new["raw_caption"] = row.get("caption")
            new["caption"] = final_caption(row)
            new["source_shard"] = row["shard"]
            sw.add(new, image=img, image_ext=row.get("image_ext") or "jpg")
    return len(rows)


class ReshardStage(Stage):
    """Write the kept samples into a new dataset (``ctx.output``/curated by default)."""

    name = "reshard"
    Config = ReshardConfig
    produces_dataset = True

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        from curation.runner.ray_utils import map_tasks

        if ds is None:
            raise ConfigError("reshard: needs an input dataset (it cannot be the first stage)")
        out = self.config.output or ctx.output.rstrip("/") + "/curated"
        config = {**self.config.model_dump(mode="json"), "source": ds.url, "source_version": ds.version}
        shards = plan(ds, self.config)
        writer = DatasetWriter(out, stage="reshard", config=config, storage_options=ctx.storage_options,
                               overwrite=ctx.overwrite)
        if writer.is_complete:
            return Dataset(out, ctx.storage_options)
        done = [0]

        def on_done(i: int, n: int) -> None:
            done[0] += 1
            ctx.progress(done[0], len(shards), n)

        counts = map_tasks(_write_shard, list(enumerate(shards)), on_done=on_done, src_url=ds.url,
                           src_opts=ds.storage_options, out=out, out_opts=ctx.storage_options, config=config)
        if ctx.stats:
            ctx.stats.samples_in = ds.num_samples
            ctx.stats.samples_out = sum(counts)
            ctx.stats.shards = len(shards)
            ctx.stats.dropped["not_selected"] = ds.num_samples - sum(counts)
        return writer.commit(list(range(len(shards))), stats=ctx.stats.to_dict() if ctx.stats else None)
