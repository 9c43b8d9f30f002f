"""``reshard``: materialise a compact new dataset of the kept samples.

Selection: samples with an image whose ``keep`` is true (when the column exists) and that
the dedup stage did not remove (``dedup_reason`` null, when it exists), or a custom ``where`` predicate.
The final caption goes to ``caption`` and ``.txt`` (the synthetic one when
``caption_source`` says so; the raw one is kept as ``raw_caption``). uids are preserved,
keys, shards and offsets are new. Output shards are planned deterministically from the
input order and written as independent Ray tasks (:meth:`Stage.map`), each committed
atomically by the task itself, so a rerun after a crash skips finished shards and yields
identical bytes.

Planning holds one number per input shard, never rows: counting tasks return how many rows
of each input shard are selected, and the plan cuts that sequence into output shards of
``(input shard, row range)`` lists. Each writing task re-evaluates the selection of the input
shards it covers (the same deterministic function, so the same rows) and takes its ranges.
A ``where`` that is a function of the row is evaluated on one shard at a time; one with a
subquery over ``samples`` is evaluated against the whole dataset (correct, but each shard's
evaluation then reads every shard's metadata).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pyarrow as pa
from pydantic import Field

from curation.config import StageConfig
from curation.errors import ConfigError
from curation.faces.blur import blur_row, check_blur_columns
from curation.io.dataset import Dataset
from curation.io.query import check_predicate, filter_relation, sandboxed_connection, select
from curation.io.writer import DatasetWriter
from curation.stage import Stage, StageContext

_DROP = {"key", "shard", "tar_offset", "tar_size"}


class ReshardConfig(StageConfig):
    """Options of ``reshard``.

    Attributes:
        samples_per_shard: samples per output shard.
        where: DuckDB predicate choosing the samples (run sandboxed; default: ``keep AND
            dedup_reason IS NULL`` over the columns that exist).
        output: output dataset root (default: ``<pipeline output>/curated``).
        blur_faces: blur the faces stage's ``face_bboxes`` in the written images.
    """

    samples_per_shard: int = Field(default=10_000, gt=0)
    where: str | None = None          # default: keep AND dedup_reason IS NULL (columns that exist)
    output: str | None = None         # default: <pipeline output>/curated
    blur_faces: bool = False          # blur the faces stage's face_bboxes in the written images (curation.faces)


def selection_sql(ds: Dataset, where: str | None) -> str:
    """The default selection (trusted SQL); a custom ``where`` is applied sandboxed by :func:`plan`."""
    cols = set(ds.columns)
    conds = ["tar_offset IS NOT NULL"]
    if not where:
        if "keep" in cols:
            conds.append("keep")
        if "dedup_reason" in cols:  # also drops eval contamination (which has no dup_of)
            conds.append("dedup_reason IS NULL")
        elif "dup_of" in cols:
            conds.append("dup_of IS NULL")
    return " AND ".join(conds)


@dataclass(frozen=True)
class OutputShard:
    """One output shard as the plan describes it: consecutive selected rows of input shards.

    ``ranges`` holds ``(input_shard, start, stop)``: rows ``start:stop`` of that input shard's
    selection (its selected rows in ``tar_offset`` order). ``len()`` is the number of rows.
    """

    id: int
    ranges: tuple[tuple[int, int, int], ...]

    def __len__(self) -> int:
        return sum(stop - start for _, start, stop in self.ranges)


def reads_tables(predicate: str | None) -> bool:
    """Whether ``predicate`` reads a table (a subquery over ``samples``): then it must see
    the whole dataset; otherwise it is a function of each row and one shard suffices."""
    if not predicate or not predicate.strip():
        return False
    import json

    import duckdb

    probe = f"SELECT * FROM samples WHERE ({predicate}\n)"
    con = duckdb.connect()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [probe]).fetchone()
        tree = json.loads(row[0] if row else "{}")
    finally:
        con.close()
    text = json.dumps(tree.get("statements") or [])
    return text.count('"BASE_TABLE"') + text.count('"TABLE_FUNCTION"') > 1 or '"SUBQUERY"' in text


def shard_selection(ds: Dataset, sid: int, *, where: str | None, conditions: Sequence[str],
                    columns: Sequence[str], whole: bool) -> pa.Table:
    """The selected rows of input shard ``sid`` in ``tar_offset`` order, with exactly
    ``columns`` (in that order; columns this shard lacks are null), as the dataset-wide
    ``samples`` view would return them. ``whole``: evaluate ``where`` against the whole
    dataset (it has subqueries); otherwise against this shard's rows only."""
    if whole:
        t = select(ds, where, conditions=[*conditions, f"shard = {int(sid)}"], order_by=["tar_offset"])
    else:
        meta = ds.read_meta(sid)
        for c in columns:
            if c not in meta.column_names:
                meta = meta.append_column(c, pa.nulls(meta.num_rows))
        con = sandboxed_connection(tables={"samples": meta})
        try:
            rel = con.table("samples")
            for c in conditions:
                rel = rel.filter(c)
            t = filter_relation(con, rel, where).order("tar_offset").to_arrow_table()
        finally:
            con.close()
    missing = [c for c in columns if c not in t.column_names]
    for c in missing:
        t = t.append_column(c, pa.nulls(t.num_rows))
    return t.select(list(columns))


def _count_task(shard_ids: Sequence[int], *, url: str, storage_options: dict, version: int,
                where: str | None, conditions: Sequence[str], whole: bool) -> list[tuple[int, int, list[str]]]:
    """``(shard, selected rows, its column names)`` for some input shards."""
    ds = Dataset(url, storage_options, version=version)
    out = []
    for sid in shard_ids:
        names = _meta_columns(ds, sid)
        cols = names + [c for c in ds.columns if c not in names]  # a column it lacks reads as null
        t = shard_selection(ds, sid, where=where, conditions=conditions, columns=cols, whole=whole)
        out.append((int(sid), t.num_rows, names))
    return out


def _meta_columns(ds: Dataset, sid: int) -> list[str]:
    import pyarrow.parquet as pq

    from curation.io import format as fmt
    from curation.io.fs import join

    with ds.fs.open(join(ds.root, fmt.meta_file(ds.version, sid)), "rb") as f:
        return list(pq.read_schema(f).names)


class ReshardPlan(list):
    """The output shards (a list of :class:`OutputShard`) and ``columns``: the selection's
    columns in the dataset-wide ``samples`` view's order (the union over input shards)."""

    def __init__(self, shards: Sequence[OutputShard], columns: Sequence[str]):
        super().__init__(shards)
        self.columns = list(columns)


def plan(ds: Dataset, cfg: ReshardConfig, map_fn: Callable[..., list] | None = None) -> ReshardPlan:
    """The selected rows, in input order (shard, then ``tar_offset``), cut into output shards
    of ``samples_per_shard`` rows, as (input shard, row range) lists: the driver holds one
    count per input shard, never rows.

    ``map_fn(fn, items, **kwargs)`` runs the counting tasks (the stage's ``map``; in this
    process when None). A bad ``where`` raises QueryError before any work.
    """
    if cfg.where:
        check_predicate(cfg.where)
    whole = reads_tables(cfg.where)
    kw = {"url": ds.url, "storage_options": ds.storage_options, "version": ds.version, "where": cfg.where,
          "conditions": [selection_sql(ds, cfg.where)], "whole": whole}
    groups = _groups(ds.shard_ids)
    run = map_fn or (lambda fn, items, **k: [fn(it, **k) for it in items])
    # pass 1 learns each shard's columns: the union, in shard order, is the samples view's
    counts = [c for part in run(_count_task, groups, **kw) for c in part]
    columns: list[str] = []
    for _, _, names in counts:
        columns += [n for n in names if n not in columns]
    n = cfg.samples_per_shard
    shards: list[OutputShard] = []
    cur: list[tuple[int, int, int]] = []
    room = n
    for sid, rows, _ in counts:
        start = 0
        while start < rows:
            take = min(room, rows - start)
            cur.append((sid, start, start + take))
            start += take
            room -= take
            if room == 0:
                shards.append(OutputShard(len(shards), tuple(cur)))
                cur, room = [], n
    if cur:
        shards.append(OutputShard(len(shards), tuple(cur)))
    return ReshardPlan(shards, columns)


def _groups(ids: Sequence[int], max_tasks: int = 256) -> list[list[int]]:
    per = max(1, -(-len(ids) // max_tasks))
    return [list(ids[i:i + per]) for i in range(0, len(ids), per)]


def final_caption(row: dict[str, Any]) -> str | None:
    if row.get("caption_source") == "synthetic" and row.get("synthetic_caption"):
        return row["synthetic_caption"]
    return row.get("caption")


IMAGE_BATCH = 256  # images read (and held) at a time while writing an output shard


def _write_shard(job: OutputShard, *, src_url: str, src_opts: dict, version: int, out: str, out_opts: dict,
                 where: str | None, conditions: Sequence[str], columns: Sequence[str], whole: bool,
                 blur_faces: bool = False) -> int:
    """Write output shard ``job`` from its input row ranges; return its row count. Holds one
    input shard's selection and ``IMAGE_BATCH`` images at a time."""
    src = Dataset(src_url, src_opts, version=version)
    w = DatasetWriter.attach(out, out_opts)
    if w.is_committed(job.id):
        return len(job)
    with w.shard(job.id) as sw:
        for sid, start, stop in job.ranges:
            sel = shard_selection(src, sid, where=where, conditions=conditions, columns=columns, whole=whole)
            for a in range(start, stop, IMAGE_BATCH):
                rows = sel.slice(a, min(IMAGE_BATCH, stop - a)).to_pylist()
                for row, img in zip(rows, src.read_images(rows)):
                    img = blur_row(row, img) if blur_faces else img
                    new = {k: v for k, v in row.items() if k not in _DROP}
                    new["raw_caption"] = row.get("caption")
                    new["caption"] = final_caption(row)
                    new["source_shard"] = row["shard"]
                    sw.add(new, image=img, image_ext=row.get("image_ext") or "jpg")
    return len(job)


class ReshardStage(Stage):
    """Write the kept samples into a new dataset (``config.output``, else ``ctx.output``)."""

    name = "reshard"
    Config = ReshardConfig
    produces_dataset = True
    output_subdir = "curated"

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        if ds is None:
            raise ConfigError("reshard: needs an input dataset (it cannot be the first stage)")
        cfg: ReshardConfig = self.config  # type: ignore[assignment]
        out = cfg.output or ctx.output
        if not out:
            raise ConfigError("reshard.output: not set (pass --out or run it in a pipeline)")
        config = {**cfg.semantic_dump(), "source": ds.url, "source_version": ds.version}
        if cfg.blur_faces:
            check_blur_columns(ds.columns, ds.url)
        shards = plan(ds, cfg, self.map)  # counting tasks; raises on a bad where before anything is written
        writer = DatasetWriter(out, stage=self.name, config=config, storage_options=ctx.storage_options,
                               overwrite=ctx.overwrite)
        if writer.is_complete:
            return Dataset(out, ctx.storage_options)
        done = [0]

        def on_done(i: int, n: int) -> None:
            done[0] += 1
            ctx.progress(done[0], len(shards), n)

        counts = self.map(_write_shard, list(shards), on_done=on_done,
                          describe=lambda job: f"output shard {job.id} of {out}", src_url=ds.url,
                          src_opts=ds.storage_options, version=ds.version, out=out, out_opts=ctx.storage_options,
                          where=cfg.where, conditions=[selection_sql(ds, cfg.where)], columns=shards.columns,
                          whole=reads_tables(cfg.where), blur_faces=cfg.blur_faces)
        stats = ctx.stats
        if stats is not None:
            stats.samples_in = ds.num_samples
            stats.samples_out = sum(counts)
            stats.shards = len(shards)
            stats.dropped["not_selected"] = ds.num_samples - sum(counts)
        return writer.commit(list(range(len(shards))), stats=stats.to_dict() if stats else None,
                             extra={"faces_blurred": True} if cfg.blur_faces else None)
