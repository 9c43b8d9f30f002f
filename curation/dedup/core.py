"""The dedup decision over a whole dataset, distributed: decontamination, exact, pHash, semantic.

Order and policy (deterministic, stated):

1. Only samples with an image take part; failed samples keep ``dup_of``/``dedup_reason`` null.
2. ``eval_contamination`` first: contaminated samples are removed (``dup_of`` null: their
   match is outside the dataset) and take no further part.
3. ``exact``: samples with equal ``sha256`` form a group, grouped globally over every shard
   (hash partitions by sha256 prefix); the kept one is chosen by :mod:`curation.dedup.groups`
   (highest ``clip_score``, then lowest ``uid``).
4. ``phash``: among the survivors, pHashes within ``phash_radius`` bits are linked
   (multi-index hashing, then connected components); same keep policy.
5. ``semantic``: SemDeDup over the survivors' image embeddings (its own keep order).

Every removed sample's ``dup_of`` is finally resolved to the uid of a *kept* sample, so
``GROUP BY dup_of`` lists whole groups. A sample is kept iff ``dedup_reason IS NULL``.

How it runs (:func:`find_duplicates`): waves of tasks through ``map`` (``Stage.map``), each
reading and writing files of a work folder (:mod:`curation.dedup.work`); the driver only
sees counts. Waves: scan groups of shards (:mod:`~curation.dedup.exact`), exact partitions,
pHash band partitions and connected-component rounds (:mod:`~curation.dedup.components`),
SemDeDup prepare / fit / assign / cluster blocks (:mod:`~curation.dedup.semantic_dist`),
two resolution rounds (:mod:`~curation.dedup.resolve`). The write-out (one task per shard,
the stage contract) joins each shard's rows with its group's decisions. The result equals
:func:`curation.dedup.reference.find_duplicates_reference` row for row.
"""
from __future__ import annotations

import io
import math
import time
from typing import Any, Callable

import numpy as np

from curation.dedup.config import DedupConfig
from curation.dedup.exact import Job, exact_partition, phash_missing, scan_group
from curation.errors import ConfigError
from curation.io import Dataset

MapFn = Callable[..., list]


def resolve_methods(ds: Dataset, cfg: DedupConfig) -> list[str]:
    if cfg.methods is not None:
        if "semantic" in cfg.methods and not ds.embeddings:
            raise ConfigError(f"dedup.methods: 'semantic' needs embeddings and {ds.url} has none "
                              "(run `curate score` first)")
        return list(cfg.methods)
    return ["exact", "phash"] + (["semantic"] if ds.embeddings else [])


def plan_groups(ds: Dataset, rows_per_task: int) -> list[int]:
    """First shard index of each group of consecutive shards holding about ``rows_per_task`` rows."""
    starts, acc = [], rows_per_task
    for i, s in enumerate(ds.shards):
        if acc >= rows_per_task:
            starts.append(i)
            acc = 0
        acc += int(s.get("num_samples", 0))
    return starts or [0]


def make_job(ds: Dataset, cfg: DedupConfig, work: Any, methods: list[str]) -> Job:
    """The task-side description of this run (counts and settings only)."""
    starts = plan_groups(ds, cfg.rows_per_task)
    n_parts = max(1, math.ceil(ds.num_samples / cfg.rows_per_task))
    return Job(url=ds.url, storage_options=ds.storage_options, version=ds.version, work=work,
               shard_ids=list(ds.shard_ids), group_starts=starts, n_parts=n_parts, methods=methods,
               radius=cfg.phash_radius, keep_phash=("phash" in methods or "phash" in ds.columns))


def find_duplicates(ds: Dataset, cfg: DedupConfig, *, work: Any, map: MapFn, cpus: int = 2,
                    job: Job | None = None) -> dict[str, Any]:
    """Decide every row's ``dup_of``/``dedup_reason`` into ``work``; return stats (counts only).

    Args:
        ds: the parent dataset version.
        work: a :class:`curation.dedup.work.Work` folder (emptied first).
        map: ``map(fn, items, **kw) -> results`` (``Stage.map``): runs each wave's tasks.
        cpus: cluster CPUs, to size the SemDeDup cluster blocks.
        job: the layout to use (default :func:`make_job`); the caller keeps it for the write-out.

    Afterwards :func:`curation.dedup.resolve.shard_columns` gives any shard's columns.
    """
    methods = resolve_methods(ds, cfg)
    work.clear()
    job = job or make_job(ds, cfg, work, methods)
    stats: dict[str, Any] = {"methods": methods, "removed": {}, "timings_s": {}, "groups": job.n_groups,
                             "partitions": job.n_parts}
    groups = list(range(job.n_groups))
    parts = list(range(job.n_parts))

    def timed(name: str, t0: float) -> None:
        stats["timings_s"][name] = round(time.perf_counter() - t0, 3)

    t = time.perf_counter()
    if "phash" in methods or "phash" in ds.columns:  # stored hashes are reused only when complete
        job.compute_phash = "phash" not in ds.columns or any(map(phash_missing, groups, job=job))
    if cfg.eval_set:
        from curation.dedup.decontam import load_eval_embeddings

        model = cfg.eval_model or (ds.embeddings or {}).get("model", "").split("/", 1)[0] or None
        ev = load_eval_embeddings(cfg.eval_set, model=model, pretrained=cfg.eval_pretrained)
        buf = io.BytesIO()
        np.save(buf, ev)
        work.write_bytes("eval.npy", buf.getvalue())
        job.eval_eps = cfg.eval_eps or cfg.eps
    scans = map(scan_group, groups, job=job)
    timed("scan", t)
    if cfg.eval_set:
        stats["removed"]["eval_contamination"] = sum(s["eval_contamination"] for s in scans)
    if "exact" in methods:
        t = time.perf_counter()
        stats["removed"]["exact"] = sum(r["exact"] for r in map(exact_partition, parts, job=job))
        timed("exact", t)
    if "phash" in methods:
        from curation.dedup.components import band_partition, connected_components

        t = time.perf_counter()
        bands = map(band_partition, parts, job=job)
        stats["phash_edges"] = sum(b["edges"] for b in bands)
        stats["phash_candidates"] = sum(b["candidates"] for b in bands)
        cc = connected_components(job, map)
        stats["removed"]["phash"] = cc["phash"]
        stats["phash_cc_rounds"] = cc["cc_rounds"]
        timed("phash", t)
    if "semantic" in methods:
        stats["removed"]["semantic"] = _semantic(job, cfg, map, cpus, stats)
    t = time.perf_counter()
    from curation.dedup.resolve import resolve_round

    if "phash" in methods:
        map(resolve_round, groups, job=job, method="phash", lookups=["semantic"])
    if "exact" in methods:
        map(resolve_round, groups, job=job, method="exact", lookups=["phash", "semantic"])
    timed("resolve", t)
    stats["with_image"] = sum(s["with_image"] for s in scans)
    stats["kept"] = stats["with_image"] - sum(stats["removed"].values())
    return stats


def _semantic(job: Job, cfg: DedupConfig, map: MapFn, cpus: int, stats: dict[str, Any]) -> int:
    from curation.dedup import semantic as sem
    from curation.dedup import semantic_dist as sd

    groups = list(range(job.n_groups))
    t = time.perf_counter()
    prep = map(sd.prepare_group, groups, job=job, plan_seed=cfg.seed)
    m = sum(p["m"] for p in prep)
    stats["timings_s"]["semantic_prepare"] = round(time.perf_counter() - t, 3)
    if not m:
        return 0
    k, mode = sem.resolve_k(cfg.n_clusters or math.ceil(m / cfg.cluster_size), m, cfg.kmeans)
    plan = sd.SemPlan(eps=cfg.eps, n_clusters=k, mode=mode, niter=cfg.niter, sample_size=cfg.sample_size,
                      keep=cfg.keep, seed=cfg.seed, block=cfg.block, dim=max(p["d"] for p in prep), candidates=m,
                      fit_threads=cpus)
    t = time.perf_counter()
    map(sd.fit_centroids, [0], job=job, plan=plan, groups=groups)
    stats["timings_s"]["kmeans_fit"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    counts = map(sd.assign_group, groups, job=job, plan=plan)
    stats["timings_s"]["assign"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    items = sd.blocks(counts, plan, max(1, 4 * cpus))
    res = map(sd.cluster_block, items, job=job, plan=plan)
    stats["timings_s"]["pairwise"] = round(time.perf_counter() - t, 3)
    stats["semantic"] = {"n_clusters": sum(r["clusters"] for r in res), "candidates": m, "kmeans": mode,
                         "blocks": len(items)}
    return sum(r["semantic"] for r in res)
