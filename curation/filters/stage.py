"""The ``filter`` stage: add ``keep`` (bool) and ``reasons`` (list<string>) to every row.

Nothing is removed and no tar is touched: a new metadata version records the decision and
why (every failed rule is named), and ``reshard`` or the streaming loader's ``where keep``
materialise it. Dataset-wide inputs are computed first with DuckDB over all shards (the
top-fraction threshold, alt-texts shared across shards); shards are then decided in
parallel Ray tasks (py3langid is the costly part) and committed one by one, so a rerun
resumes. See :mod:`curation.filters.rules` for the exact boundaries.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.config import StageConfig
from curation.errors import ConfigError
from curation.filters import rules as R
from curation.io import Dataset
from curation.runner.stage import Stage, StageContext

RuleSet = Literal["datacomp_basic", "align"]


class FilterConfig(StageConfig):
    """What to keep.

    Attributes:
        where: a DuckDB predicate over ``samples``; rows where it is not true get ``where``.
        rules: named rule sets: ``datacomp_basic``, ``align``.
        english: DataComp basic's English-caption rule (py3langid); off keeps the others.
        clip_threshold: keep ``clip_score >= t`` (LAION ViT-B/32: 0.28). After the caption
            stage, text and CLIP rules judge the caption a sample trains with (the synthetic
            one where ``caption_source`` is ``synthetic``).
        clip_top_fraction: keep the top ``f`` of scored samples, DataComp's global rule.
        align_max_shared: ALIGN drops alt-texts used by more than this many images.
        drop_duplicates: rows the dedup stage marked (``dedup_reason``) get ``dedup_<reason>``.
        parallel: decide shards in Ray tasks (False: in this process).
    """

    where: str | None = None
    rules: list[RuleSet] = Field(default_factory=list)
    english: bool = True
    clip_threshold: float | None = Field(None, ge=-1, le=1)
    clip_top_fraction: float | None = Field(None, gt=0, le=1)
    align_max_shared: int = Field(R.ALIGN_MAX_SHARED, ge=1)
    drop_duplicates: bool = True
    parallel: bool = True


def effective_score_sql(columns: set[str]) -> str:
    """SQL for the score of the caption a sample will train with.

    After the caption stage (Nguyen et al. 2023's mixing), a sample whose
    ``caption_source`` is ``synthetic`` is judged by its synthetic pair's score.
    """
    if {"caption_source", "synthetic_clip_score"} <= columns:
        return "CASE WHEN caption_source = 'synthetic' THEN synthetic_clip_score ELSE clip_score END"
    return "clip_score"


def effective_columns(meta: pa.Table) -> tuple[list, list]:
    """Per-row (caption, clip_score) of the caption each sample will train with."""
    n = meta.num_rows
    get = lambda c: meta.column(c).to_pylist() if c in meta.column_names else [None] * n  # noqa: E731
    captions, scores = get("caption"), get("clip_score")
    if "caption_source" in meta.column_names:
        for i, (src, cap, sc) in enumerate(zip(get("caption_source"), get("synthetic_caption"),
                                               get("synthetic_clip_score"))):
            if src == "synthetic":
                captions[i], scores[i] = cap, sc
    return captions, scores


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def dataset_inputs(ds: Dataset, cfg: FilterConfig) -> dict[str, Any]:
    """The dataset-wide numbers the per-shard rules need, computed with DuckDB."""
    from curation.io.query import QueryError, query

    cols = set(ds.columns)
    out: dict[str, Any] = {"threshold": None, "shared": frozenset(), "n_scored": None}
    if (cfg.clip_threshold is not None or cfg.clip_top_fraction is not None) and "clip_score" not in cols:
        raise ConfigError(f"{ds.url}: CLIP rules need clip_score; run `curate score` first")
    if cfg.where:
        try:
            query(ds, f"SELECT count(*) FROM samples WHERE ({cfg.where})")
        except QueryError as e:
            raise ConfigError(f"where: {e} (got {cfg.where!r})") from None
    if cfg.clip_top_fraction is not None:
        score = effective_score_sql(cols)
        scored = query(ds, f"SELECT {score} AS clip_score FROM samples WHERE status = 'success' "
                           f"AND ({score}) IS NOT NULL")
        out["n_scored"] = scored.num_rows
        out["threshold"] = R.top_fraction_threshold(scored.column("clip_score").to_numpy(), cfg.clip_top_fraction)
    if "align" in cfg.rules:
        t = query(ds, "SELECT caption FROM samples WHERE status = 'success' AND caption IS NOT NULL "
                      f"GROUP BY caption HAVING count(*) > {int(cfg.align_max_shared)}")
        out["shared"] = frozenset(t.column("caption").to_pylist())
    return out


def decide_shard(sid: int, *, url: str, storage_options: dict, version: int, cfg: dict,
                 inputs: dict[str, Any]) -> pa.Table:
    """One shard's metadata with ``keep`` and ``reasons`` (replacing earlier ones)."""
    c = FilterConfig.model_validate(cfg)
    ds = Dataset(url, storage_options, version=version)
    meta = ds.read_meta(sid)
    masks = shard_masks(ds, sid, meta, c, inputs)
    status = meta.column("status").to_pylist()
    offsets = meta.column("tar_offset").to_pylist()
    failed = [None if (st == "success" and off is not None) else (st if st != "success" else "no_image")
              for st, off in zip(status, offsets)]
    keep, reasons = R.combine(meta.num_rows, masks, failed)
    base = meta.drop_columns([n for n in ("keep", "reasons") if n in meta.column_names])
    return (base.append_column("keep", pa.array(keep, type=pa.bool_()))
            .append_column("reasons", pa.array(reasons, type=pa.list_(pa.string()))))


def shard_masks(ds: Dataset, sid: int, meta: pa.Table, c: FilterConfig, inputs: dict) -> dict[str, np.ndarray]:
    """Every configured rule's pass mask for one shard (rule name -> bool per row)."""
    col = lambda n: meta.column(n).to_pylist() if n in meta.column_names else [None] * meta.num_rows  # noqa: E731
    captions, scores = effective_columns(meta)
    width = [o if o is not None else w for o, w in zip(col("original_width"), col("width"))]
    height = [o if o is not None else h for o, h in zip(col("original_height"), col("height"))]
    masks: dict[str, np.ndarray] = {}
    if c.drop_duplicates and "dedup_reason" in meta.column_names:
        reasons = col("dedup_reason")
        for kind in sorted({r for r in reasons if r}):
            masks[f"dedup_{kind}"] = np.array([r != kind for r in reasons], dtype=bool)
    if "datacomp_basic" in c.rules:
        masks.update(R.datacomp_basic(captions, width, height, english=c.english))
    if "align" in c.rules:
        masks.update(R.align(captions, width, height, inputs["shared"]))
    if c.clip_threshold is not None:
        masks["clip_threshold"] = R.clip_threshold(scores, c.clip_threshold)
    if c.clip_top_fraction is not None:
        masks["clip_top_fraction"] = R.top_fraction(scores, inputs["threshold"])
    if c.where:
        masks["where"] = _where_mask(ds, sid, meta, c.where)
    return masks


def _where_mask(ds: Dataset, sid: int, meta: pa.Table, predicate: str) -> np.ndarray:
    """Rows of shard ``sid`` for which ``predicate`` is true (NULL counts as false).

    Evaluated against the whole-dataset ``samples`` view, so subqueries see every shard.
    """
    from curation.io.query import query

    t = query(ds, f"SELECT uid FROM samples WHERE shard = {int(sid)} AND ({predicate})")
    passing = set(t.column("uid").to_pylist())
    return np.array([u in passing for u in meta.column("uid").to_pylist()], dtype=bool)


class FilterStage(Stage):
    """Decide ``keep``/``reasons`` for every row; see the module docstring."""

    name = "filter"
    Config = FilterConfig

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        cfg: FilterConfig = self.config
        inputs = dataset_inputs(ds, cfg)  # validates SQL and columns before anything is written
        semantic = cfg.model_dump(mode="json", exclude={"parallel"})
        vw = ds.new_version(self.name, semantic)
        pending = vw.pending_shards()
        total = len(ds.shard_ids)
        done = total_done = total - len(pending)
        stats = ctx.stats
        kwargs = {"url": ds.url, "storage_options": ds.storage_options, "version": ds.version,
                  "cfg": cfg.model_dump(mode="json"), "inputs": inputs}

        def commit(i: int, table: pa.Table) -> None:
            nonlocal done
            vw.write_meta(pending[i], table)
            done += 1
            if stats is not None:
                stats.samples_in += table.num_rows
                keep = table.column("keep").to_pylist()
                stats.samples_out += sum(keep)
                for k, rs in zip(keep, table.column("reasons").to_pylist()):
                    for r in rs or []:
                        stats.dropped[r] += 1
            ctx.progress(done, total, table.num_rows)

        if cfg.parallel and len(pending) > 1:
            from curation.runner.ray_utils import map_tasks

            map_tasks(decide_shard, pending, on_done=commit, **kwargs)
        else:
            for i, sid in enumerate(pending):
                commit(i, decide_shard(sid, **kwargs))
        if stats is not None:
            stats.extra["filter"] = {"top_fraction_threshold": inputs["threshold"], "n_scored": inputs["n_scored"],
                                     "shared_alt_texts": len(inputs["shared"]), "resumed_shards": total_done}
        return vw.commit(stats=stats.to_dict() if stats else {})
