"""The split layout as a Ray Data job: read/decode tasks -> model actors that write their shards.

GPUs need more decode throughput than their own process gives, so read tasks (spread over
the nodes, next to their storage) decode chunks of each shard and stream them through the
object store to one model actor per GPU. Ray Data's streaming executor overlaps the decoding
of the next batches with the forward pass of this one. The actors write their results
themselves (:mod:`curation.score.parts`) and stream back only commit records, which the
driver hands to the stage's ``on_done``. Shards the job left uncommitted are assembled after
it, as stage tasks (:meth:`Stage.map`).

This is the one place the score stage talks to Ray directly: a streaming read -> actor
pipeline with backpressure is what Ray Data is for, and the per-shard contract has no such
shape. Everything it writes goes through the stage's own commit path.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from curation.score.parts import assemble_leftover, remove_parts
from curation.stage.base import record_path


def run_split(stage: Any, job: Any, pending: list[int], plan: dict[str, Any],
              on_done: Callable[[int, dict[str, Any]], None]) -> dict[str, int]:
    """Score ``pending`` shards with the split layout; every shard ends committed.

    Returns how many shards the model actors committed in the job (``in_job``) and how many
    were assembled after it (``after_job``: tars lacking members, shards with nothing to
    score, an actor's last assembly cut short).
    """
    import ray

    from curation.score.embed import ClipEmbedder, read_shards

    cfg, ds = stage.config, job.ds
    remove_parts(job)  # a killed run's parts: those shards are simply scored again
    rctx = ray.data.DataContext.get_current()
    rctx.enable_progress_bars = False  # the stage reports progress through ctx.progress
    items = ray.data.from_items([{"shard": s} for s in pending], override_num_blocks=len(pending))
    read_kwargs = {"url": ds.url, "storage_options": ds.storage_options, "version": ds.version,
                   "pipe": plan["pipe"], "decode": plan["decode"], "draft": cfg.draft, "chunk": cfg.chunk}
    # A ray_remote_args_fn keeps Ray Data from fusing the read tasks into the actor (it never
    # fuses ops whose args are computed late): fused, decoding would run inside the model
    # actor and stop overlapping the forward pass.
    read_compute = ray.data.TaskPoolStrategy(size=cfg.read_concurrency) if cfg.read_concurrency else None
    rd = items.map_batches(read_shards, batch_size=1, fn_kwargs=read_kwargs, num_cpus=1,  # type: ignore[arg-type]
                           compute=read_compute, ray_remote_args_fn=_spread)
    gpu = plan["device"] == "cuda"
    model_kwargs = {"model": cfg.model, "pretrained": cfg.pretrained, "device": plan["device"],
                    "precision": plan["precision"], "pipe": plan["pipe"], "threads": cfg.threads_per_actor,
                    "sink": job}
    out = rd.map_batches(ClipEmbedder, batch_size=cfg.batch_size,
                         compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
                         num_gpus=1 if gpu else 0, num_cpus=1 if gpu else cfg.threads_per_actor,
                         fn_constructor_kwargs=model_kwargs)
    seen: set[int] = set()
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        for rec in batch["record"]:
            rec = json.loads(rec)
            if rec["shard"] not in seen:
                seen.add(rec["shard"])
                on_done(len(seen) - 1, rec)
    # committed by an actor whose record did not come back (its last assembly), or not at all
    left = []
    for sid in pending:
        if sid in seen:
            continue
        try:
            rec = json.loads(ds.fs.cat_file(_join(ds.root, record_path(job.version, sid))))
        except FileNotFoundError:
            left.append(sid)
            continue
        if _meta_exists(job, sid):
            seen.add(sid)
            on_done(len(seen) - 1, rec)
        else:
            left.append(sid)
    in_job = len(seen)
    stage.map(assemble_leftover, left, on_done=lambda i, rec: on_done(in_job + i, rec), job=job)
    remove_parts(job)
    return {"in_job": in_job, "after_job": len(left)}


def _join(*parts: str) -> str:
    from curation.io.fs import join

    return join(*parts)


def _meta_exists(job: Any, sid: int) -> bool:
    from curation.io import format as fmt

    return job.ds.fs.exists(_join(job.ds.root, fmt.meta_file(job.version, sid)))


def _spread() -> dict[str, Any]:
    return {"scheduling_strategy": "SPREAD"}  # reads spread over nodes, next to their storage
