"""The ``score`` stage: open_clip embeddings and ``clip_score`` for every successful sample.

Output of version N (DESIGN.md section 3):

* ``meta/vN``: every parent row and column, plus ``clip_score`` (raw cosine of the
  L2-normalised embeddings, float32, as LAION/DataComp store it), ``clip_model``
  (``<arch>/<pretrained>``) and ``score_error`` (why a successful download could not be
  scored, e.g. ``decode_error: ...``). Failed downloads keep nulls in all three.
* ``emb/vN``: ``uid``, ``image_emb``, ``text_emb`` as ``fixed_size_list<float32>[d]``
  (DuckDB ``FLOAT[d]``), **row-aligned with the shard's metadata**: one row per metadata
  row, null vectors where nothing was scored, so joins work by position or by ``uid``.

Execution is a Ray Data job (see :mod:`curation.score.embed`): on GPUs, read/decode tasks
feed one model actor per GPU; on CPU, ``threads_per_actor``-core actors each read, decode and
embed whole shards (decode one chunk ahead in a thread). A CPU run over at most
``local_max_samples`` samples runs the same scorer in-process instead, since starting Ray Data
workers (each importing torch and loading the model) costs more than such a job; so does a
CPU run on a Ray cluster of at most ``SMALL_CLUSTER_CPUS`` cores, where the in-process scorer's
decode thread + model already use every core (measured on 2 cores, 8,192 pairs: in-process
1,261 pairs/s vs 803 through Ray Data actors). Either way
shards are committed by the driver as their last batch arrives, so a killed run resumes at the
first uncommitted shard.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.config import StageConfig
from curation.io import Dataset
from curation.runner.stage import Stage, StageContext
from curation.score.preprocess import PixelPipeline

NEW_COLUMNS = ("clip_score", "clip_model", "score_error")


SMALL_CLUSTER_CPUS = 4  # at or below this many cluster CPUs, CPU scoring runs in-process


def _cluster_cpus() -> float:
    import ray

    from curation.runner.ray_utils import ensure_ray

    ensure_ray()
    return float(ray.cluster_resources().get("CPU", 0))


class ScoreConfig(StageConfig):
    """Which model, and how to run it.

    Attributes:
        model: open_clip architecture, ``hf-hub:org/name``, or a project checkpoint folder.
        pretrained: open_clip pretrained tag, a weights file, or a checkpoint folder.
        batch_size: samples per forward pass.
        device: ``auto`` uses GPUs when the Ray cluster has them (one actor per GPU).
        precision: ``auto`` is bf16 on GPU and fp32 on CPU.
        decode: ``pil`` (Pillow in read tasks) or ``torch`` (torchvision in the actor, nvjpeg
            on GPU); ``auto`` picks ``torch`` on GPU.
        draft: Pillow draft mode for JPEGs (faster; pixels differ slightly from a full decode).
        actors: actor-pool size; default one per GPU, or CPUs / ``threads_per_actor``.
        threads_per_actor: torch intra-op threads (and CPUs reserved) per CPU actor.
        read_concurrency: max parallel read/decode tasks (default: as resources allow).
        executor: ``ray``, ``local`` (in-process: one scorer, decode thread + model), or
            ``auto``: local for CPU runs over at most ``local_max_samples`` samples.
        local_max_samples: the ``auto`` threshold.
    """

    model: str = "ViT-B-32"
    pretrained: str | None = None
    batch_size: int = Field(256, ge=1, le=65536)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    decode: Literal["auto", "pil", "torch"] = "auto"
    draft: bool = True
    actors: int | None = Field(None, ge=1)
    threads_per_actor: int = Field(1, ge=1)
    read_concurrency: int | None = Field(None, ge=1)
    chunk: int = Field(256, ge=1, description="samples per read-task output block")
    executor: Literal["auto", "ray", "local"] = "auto"  # auto: see SMALL_CLUSTER_CPUS
    local_max_samples: int = Field(4096, ge=0)


def resolve_plan(cfg: ScoreConfig) -> dict[str, Any]:
    """Turn ``auto`` settings into concrete ones (device/decode/precision; the Ray layout and
    pool size are settled by :func:`cluster_plan` only when Ray runs)."""
    if cfg.device == "auto":
        gpus, _ = _cluster()
        device = "cuda" if gpus else "cpu"
    else:
        device = cfg.device
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    decode = cfg.decode if cfg.decode != "auto" else ("torch" if device == "cuda" else "pil")
    return {"device": device, "precision": precision, "decode": decode}


def cluster_plan(cfg: ScoreConfig, plan: dict[str, Any]) -> dict[str, Any]:
    """``layout`` (``split``: read tasks -> model actors; ``fused``: CPU actors that read,
    decode and embed whole shards) and ``actors`` for the attached Ray cluster."""
    gpus, cpus = _cluster()
    if plan["device"] == "cuda":
        return {"layout": "split", "actors": cfg.actors or max(1, gpus)}
    layout = "fused" if plan["decode"] == "pil" else "split"
    per = cfg.threads_per_actor if layout == "fused" else cfg.threads_per_actor + 1
    return {"layout": layout, "actors": cfg.actors or max(1, cpus // per)}


def _cluster() -> tuple[int, int]:
    import ray

    from curation.runner.ray_utils import ensure_ray

    ensure_ray()
    res = ray.cluster_resources()
    return int(res.get("GPU", 0)), int(res.get("CPU", 1))


class ScoreStage(Stage):
    """CLIP-score a dataset; see the module docstring for what it writes."""

    name = "score"
    Config = ScoreConfig

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        from curation.models import load_clip

        cfg: ScoreConfig = self.config
        plan = resolve_plan(cfg)
        clip = load_clip(cfg.model, cfg.pretrained)  # validates names/paths before anything is written
        pipe = PixelPipeline.from_preprocess(clip.preprocess)
        label, arch, dim = clip.name, clip.arch, _embed_dim(clip)
        # execution knobs (actors, batch size) do not change results, so they stay out of the hash
        semantic = {"model": cfg.model, "pretrained": cfg.pretrained, "draft": cfg.draft,
                    "decode": plan["decode"], "precision": plan["precision"]}
        vw = ds.new_version(self.name, semantic)
        pending = vw.pending_shards()
        expected = {sid: _expected(ds, sid) for sid in pending}
        stats = ctx.stats
        done = len(ds.shard_ids) - len(pending)
        acc: dict[int, dict[str, tuple]] = defaultdict(dict)

        def flush(sid: int) -> None:
            nonlocal done
            meta, emb, n_ok, n_err = assemble_shard(ds.read_meta(sid), acc.pop(sid, {}), label, dim)
            vw.write_embeddings(sid, emb, model=label)
            vw.write_meta(sid, meta)
            done += 1
            if stats is not None:
                stats.samples_in += meta.num_rows
                stats.samples_out += n_ok
                if n_err:
                    stats.dropped["score_error"] += n_err
            ctx.progress(done, len(ds.shard_ids), n_ok)

        for sid in [s for s in pending if expected[s] == 0]:
            flush(sid)
        todo = [s for s in pending if expected[s] > 0]
        n_todo = sum(expected[s] for s in todo)
        local = plan["device"] == "cpu" and (
            cfg.executor == "local" or (cfg.executor == "auto" and (
                n_todo <= cfg.local_max_samples or _cluster_cpus() <= SMALL_CLUSTER_CPUS)))
        plan["executor"] = "local" if local else "ray"
        if todo:
            if local:
                batches = _local_batches(ds, todo, cfg, plan, pipe, clip)
            else:
                plan.update(cluster_plan(cfg, plan))
                batches = _pipeline(ds, todo, cfg, plan, arch, pipe).iter_batches(
                    batch_size=None, batch_format="numpy")
            del clip
            for batch in batches:
                for sid, uid, s, err, ie, te in zip(batch["shard"], batch["uid"], batch["clip_score"],
                                                    batch["score_error"], batch["image_emb"], batch["text_emb"]):
                    acc[int(sid)][uid] = (s, err, ie, te)
                for sid in {int(x) for x in batch["shard"]}:
                    if len(acc[sid]) >= expected[sid]:
                        flush(sid)
            for sid in [s for s in todo if not vw.is_committed(s)]:
                flush(sid)  # only if a tar lacked members: those rows get a reason
        if stats is not None:
            stats.extra.update({"clip_model": label, **plan})
        return vw.commit(stats=stats.to_dict() if stats else {},
                         embeddings={"version": vw.version, "dim": dim, "model": label})


def _embed_dim(clip) -> int:
    import torch

    with torch.inference_mode():
        return int(clip.model.encode_text(torch.zeros((1, clip.context_length), dtype=torch.long)).shape[-1])


def _expected(ds: Dataset, sid: int) -> int:
    t = ds.read_meta(sid, columns=["status", "tar_offset"])
    mask = pc.and_(pc.equal(t["status"], "success"), pc.is_valid(t["tar_offset"]))
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _local_batches(ds: Dataset, shard_ids: list[int], cfg: ScoreConfig, plan: dict, pipe: PixelPipeline, clip):
    """The in-process executor: one :class:`ShardScorer` on the driver's already-loaded model,
    decoding one chunk ahead in a thread while torch runs the model on the remaining cores."""
    import os

    import torch

    from curation.score.embed import ShardScorer

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = torch.get_num_threads()
    # one core decodes; the rest run the model (intra-op threads beyond that only contend)
    torch.set_num_threads(max(1, cores - 1))
    try:
        scorer = ShardScorer(cfg.model, cfg.pretrained, "cpu", plan["precision"], pipe, None,
                             ds.url, ds.storage_options, cfg.draft, cfg.batch_size, clip=clip)
        yield from scorer.iter_shards(shard_ids)
    finally:
        torch.set_num_threads(before)


def _pipeline(ds: Dataset, shard_ids: list[int], cfg: ScoreConfig, plan: dict, arch: str, pipe: PixelPipeline):
    """The Ray Data job, as one streaming dataset of scored batches (see :func:`cluster_plan`)."""
    import ray

    from curation.score.embed import ClipEmbedder, ShardScorer, read_shards

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the stage reports progress through ctx.progress
    items = ray.data.from_items([{"shard": s} for s in shard_ids], override_num_blocks=len(shard_ids))
    model_kwargs = {"model": cfg.model, "pretrained": cfg.pretrained, "device": plan["device"],
                    "precision": plan["precision"], "pipe": pipe, "threads": cfg.threads_per_actor}
    if plan["layout"] == "fused":
        # whole shards per call, so a shard is read sequentially by one actor; an actor takes
        # one shard at a time so shards spread over the pool
        return items.map_batches(
            ShardScorer, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan["actors"], max_tasks_in_flight_per_actor=1),
            num_cpus=cfg.threads_per_actor,
            fn_constructor_kwargs={**model_kwargs, "url": ds.url, "storage_options": ds.storage_options,
                                   "draft": cfg.draft, "chunk": cfg.batch_size})
    read_kwargs = {"url": ds.url, "storage_options": ds.storage_options, "pipe": pipe,
                   "decode": plan["decode"], "draft": cfg.draft, "chunk": cfg.chunk}
    # A ray_remote_args_fn keeps Ray Data from fusing the read tasks into the actor (it never
    # fuses ops whose args are computed late): fused, decoding would run inside the model
    # actor and stop overlapping the forward pass.
    read_compute = ray.data.TaskPoolStrategy(size=cfg.read_concurrency) if cfg.read_concurrency else None
    rd = items.map_batches(read_shards, batch_size=1, fn_kwargs=read_kwargs, num_cpus=1,
                           compute=read_compute, ray_remote_args_fn=_spread)
    gpu = plan["device"] == "cuda"
    return rd.map_batches(
        ClipEmbedder, batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_gpus=1 if gpu else 0, num_cpus=1 if gpu else cfg.threads_per_actor,
        fn_constructor_kwargs=model_kwargs)


def _spread() -> dict[str, Any]:
    return {"scheduling_strategy": "SPREAD"}  # reads spread over nodes, next to their storage


def fixed_list(vectors: list[np.ndarray | None], dim: int) -> pa.Array:
    """``fixed_size_list<float32>[dim]`` with nulls where a vector is None."""
    flat = np.zeros((len(vectors), dim), dtype=np.float32)
    valid = np.zeros(len(vectors), dtype=bool)
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i], valid[i] = v, True
    arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
    if valid.all():
        return arr
    return pc.if_else(pa.array(valid), arr, pa.nulls(len(vectors), arr.type))


def assemble_shard(meta: pa.Table, results: dict[str, tuple], label: str, dim: int):
    """Join one shard's results onto its metadata rows (same rows, same order).

    Returns ``(meta_with_new_columns, embeddings_table, n_scored, n_errors)``.
    """
    uids = meta.column("uid").to_pylist()
    status = meta.column("status").to_pylist()
    offsets = meta.column("tar_offset").to_pylist()
    scores, models, errors, iembs, tembs = [], [], [], [], []
    for uid, st, off in zip(uids, status, offsets):
        attempted = st == "success" and off is not None
        r = results.get(uid)
        err = None
        if attempted and r is None:
            err = "missing_image: no tar member for this row"
        elif r is not None and r[1]:
            err = str(r[1])
        ok = attempted and err is None
        scores.append(float(r[0]) if ok else None)
        models.append(label if attempted else None)
        errors.append(err)
        iembs.append(np.asarray(r[2], dtype=np.float32) if ok else None)
        tembs.append(np.asarray(r[3], dtype=np.float32) if ok else None)
    base = meta.drop_columns([c for c in NEW_COLUMNS if c in meta.column_names])
    out = (base.append_column("clip_score", pa.array(scores, type=pa.float32()))
           .append_column("clip_model", pa.array(models, type=pa.string()))
           .append_column("score_error", pa.array(errors, type=pa.string())))
    emb = pa.table({"uid": meta.column("uid"), "image_emb": fixed_list(iembs, dim),
                    "text_emb": fixed_list(tembs, dim)})
    emb = emb.replace_schema_metadata({"model": label})
    n_ok = sum(s is not None for s in scores)
    return out, emb, n_ok, sum(e is not None for e in errors)
