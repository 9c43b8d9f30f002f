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

from curation.config import StageConfig, execution
from curation.errors import ConfigError
from curation.filters import rules as R
from curation.filters.threshold import top_fraction_threshold
from curation.io import Dataset
from curation.stage import Shard, ShardResult, ShardStage, StageContext, StageStats

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
        min_aesthetic: keep ``aesthetic_score >= x`` (the classify stage's LAION aesthetic head; 1-10).
        max_nsfw: keep ``nsfw_score <= p`` (the classify stage's NSFW head, a probability).
        parallel: decide shards in Ray tasks (False: in this process).
    """

    where: str | None = None
    rules: list[RuleSet] = Field(default_factory=list)
    english: bool = True
    clip_threshold: float | None = Field(default=None, ge=-1, le=1)
    clip_top_fraction: float | None = Field(default=None, gt=0, le=1)
    align_max_shared: int = Field(default=R.ALIGN_MAX_SHARED, ge=1)
    drop_duplicates: bool = True
    min_aesthetic: float | None = None
    max_nsfw: float | None = Field(default=None, ge=0, le=1)
    parallel: bool = execution(True)


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


def _local_map(fn, items, **kwargs) -> list:
    return [fn(it, **kwargs) for it in items]


def dataset_inputs(ds: Dataset, cfg: FilterConfig, map_fn=None) -> dict[str, Any]:
    """The dataset-wide numbers the per-shard rules need.

    The top-fraction threshold comes from histogram tasks over shards run by ``map_fn``
    (in this process when None); SQL validation and ALIGN's shared alt-texts use DuckDB,
    whose results (a count, the over-shared captions) are small.
    """
    from curation.io.query import QueryError, query, select

    cols = set(ds.columns)
    out: dict[str, Any] = {"threshold": None, "shared": frozenset(), "n_scored": None}
    if (cfg.clip_threshold is not None or cfg.clip_top_fraction is not None) and "clip_score" not in cols:
        raise ConfigError(f"{ds.url}: CLIP rules need clip_score; run `curate score` first")
    for key, col in (("min_aesthetic", "aesthetic_score"), ("max_nsfw", "nsfw_score")):
        if getattr(cfg, key) is not None and col not in cols:
            raise ConfigError(f"{key}: {ds.url} has no {col}; run `curate classify --head {col[:-6]}=HEAD` first")
    if cfg.where:
        try:
            select(ds, cfg.where, columns=["uid"], conditions=["false"])  # sandboxed: parses and binds, reads no row
        except QueryError as e:
            raise ConfigError(f"where: {e} (got {cfg.where!r})") from None
    if cfg.clip_top_fraction is not None:
        # exact, from the distributed column: no process holds every score (filters.threshold)
        out["threshold"], out["n_scored"] = top_fraction_threshold(
            ds, cfg.clip_top_fraction, synthetic=effective_score_sql(cols) != "clip_score",
            map_fn=map_fn or _local_map)
    if "align" in cfg.rules:
        t = query(ds, "SELECT caption FROM samples WHERE status = 'success' AND caption IS NOT NULL "
                      f"GROUP BY caption HAVING count(*) > {int(cfg.align_max_shared)}")
        out["shared"] = frozenset(t.column("caption").to_pylist())
    return out


def decide(ds: Dataset, sid: int, meta: pa.Table, c: FilterConfig, inputs: dict[str, Any]) -> tuple[list, list]:
    """One shard's ``keep`` (bool per row) and ``reasons`` (list of failed rules per row)."""
    masks = shard_masks(ds, sid, meta, c, inputs)
    status = meta.column("status").to_pylist()
    offsets = meta.column("tar_offset").to_pylist()
    failed = [None if (st == "success" and off is not None) else (st if st != "success" else "no_image")
              for st, off in zip(status, offsets)]
    return R.combine(meta.num_rows, masks, failed)


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
    if c.min_aesthetic is not None:
        masks["min_aesthetic"] = R.score_bounds(col("aesthetic_score"), low=c.min_aesthetic)
    if c.max_nsfw is not None:
        masks["max_nsfw"] = R.score_bounds(col("nsfw_score"), high=c.max_nsfw)
    if c.where:
        masks["where"] = _where_mask(ds, sid, meta, c.where)
    return masks


def _where_mask(ds: Dataset, sid: int, meta: pa.Table, predicate: str) -> np.ndarray:
    """Rows of shard ``sid`` for which ``predicate`` is true (NULL counts as false).

    Evaluated against the whole-dataset ``samples`` view, so subqueries see every shard.
    """
    from curation.io.query import select

    t = select(ds, predicate, columns=["uid"], conditions=[f"shard = {int(sid)}"])  # sandboxed predicate
    passing = set(t.column("uid").to_pylist())
    return np.array([u in passing for u in meta.column("uid").to_pylist()], dtype=bool)


class FilterStage(ShardStage):
    """Decide ``keep``/``reasons`` for every row; see the module docstring."""

    name = "filter"
    Config = FilterConfig

    def executor_setting(self):
        return "local" if not self.config.parallel else super().executor_setting()  # type: ignore[attr-defined]

    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        # validates SQL and columns before anything is written; histograms run through Stage.map
        return dataset_inputs(ds, self.config, self.map)  # type: ignore[arg-type]

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        keep, reasons = decide(shard.dataset, shard.id, shard.meta, self.config, plan)  # type: ignore[arg-type]
        dropped: dict[str, int] = {}
        for rs in reasons:
            for r in rs or []:
                dropped[r] = dropped.get(r, 0) + 1
        return ShardResult(columns={"keep": pa.array(keep, type=pa.bool_()),
                                    "reasons": pa.array(reasons, type=pa.list_(pa.string()))},
                           stats={"samples_out": int(sum(keep)), "dropped": dropped})

    def finish(self, ds: Dataset, plan: dict[str, Any], stats: StageStats) -> None:
        stats.extra["filter"] = {"top_fraction_threshold": plan["threshold"], "n_scored": plan["n_scored"],
                                 "shared_alt_texts": len(plan["shared"]),
                                 "resumed_shards": stats.extra.get("resumed_shards", 0)}
