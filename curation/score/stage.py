"""The ``score`` stage: open_clip embeddings and ``clip_score`` for every successful sample.

Output of version N (DESIGN.md section 3; columns and reasons in :mod:`curation.score.assemble`):

* ``meta/vN``: every parent row and column, plus ``clip_score`` (raw cosine of the
  L2-normalised embeddings, float32, as LAION/DataComp store it), ``clip_model``
  (``<arch>/<pretrained>``) and ``score_error`` (why a successful download could not be
  scored, e.g. ``decode_error: ...``). Failed downloads keep nulls in all three.
* ``emb/vN``: ``uid``, ``image_emb``, ``text_emb`` as ``fixed_size_list<float32>[d]``
  (DuckDB ``FLOAT[d]``), **row-aligned with the shard's metadata**: one row per metadata
  row, null vectors where nothing was scored, so joins work by position or by ``uid``.

A :class:`~curation.stage.ShardStage`: whoever scores a shard writes its metadata and
embeddings and returns a small commit record; the driver never holds embeddings. Three ways
to run (see :mod:`curation.score.embed`):

* in-process (``local``): one :class:`~curation.score.embed.ShardScorer` on the driver's
  already-loaded model, decoding one chunk ahead in a thread while torch uses the other
  cores. ``auto`` picks it for CPU runs over at most ``local_max_samples`` samples, and on Ray
  clusters of at most ``SMALL_CLUSTER_CPUS`` cores, where its decode thread + model already
  use every core (measured on 2 cores, 8,192 pairs: in-process 1,261 pairs/s vs 803 through
  Ray Data actors);
* ``fused`` (CPU): the stage's actor pool, ``threads_per_actor`` cores per actor, each
  reading, decoding and embedding whole shards;
* ``split`` (GPU, or ``decode=torch`` on CPU): Ray Data read/decode tasks feed one model actor
  per GPU; the actors write their shards (:mod:`curation.score.pipeline`).

Shards commit one by one, so a killed run resumes at the first uncommitted shard.
"""
from __future__ import annotations

import os
from typing import Any, Literal, cast

from curation.config import StageConfig, execution
from curation.io import Dataset
from curation.score.assemble import assemble_shard
from curation.score.preprocess import PixelPipeline
from curation.stage import Shard, ShardResult, ShardStage, StageContext, StageStats

SMALL_CLUSTER_CPUS = 4  # at or below this many cluster CPUs, CPU scoring runs in-process


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
    batch_size: int = execution(256, ge=1, le=65536, description="samples per forward pass")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    decode: Literal["auto", "pil", "torch"] = "auto"
    draft: bool = True
    actors: int | None = execution(None, ge=1)
    threads_per_actor: int = execution(1, ge=1)
    read_concurrency: int | None = execution(None, ge=1)
    chunk: int = execution(256, ge=1, description="samples per read-task output block")
    executor: Literal["auto", "ray", "local"] = execution("auto")  # auto: see SMALL_CLUSTER_CPUS
    local_max_samples: int = execution(4096, ge=0)


def resolve_plan(cfg: ScoreConfig, gpus: int) -> dict[str, Any]:
    """Turn ``auto`` settings into concrete ones (device/decode/precision) for a cluster
    with ``gpus`` GPUs."""
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpus else "cpu")
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    decode = cfg.decode if cfg.decode != "auto" else ("torch" if device == "cuda" else "pil")
    return {"device": device, "precision": precision, "decode": decode}


def cluster_plan(cfg: ScoreConfig, plan: dict[str, Any], gpus: int, cpus: int) -> dict[str, Any]:
    """``layout`` (``split``: read tasks -> model actors; ``fused``: CPU actors that read,
    decode and embed whole shards) and ``actors`` for a cluster of ``gpus``/``cpus``."""
    if plan["device"] == "cuda":
        return {"layout": "split", "actors": cfg.actors or max(1, gpus)}
    layout = "fused" if plan["decode"] == "pil" else "split"
    per = cfg.threads_per_actor if layout == "fused" else cfg.threads_per_actor + 1
    return {"layout": layout, "actors": cfg.actors or max(1, cpus // per)}


class ScoreStage(ShardStage):
    """CLIP-score a dataset; see the module docstring for what it writes and where it runs."""

    name = "score"
    Config = ScoreConfig
    small_cluster_cpus = SMALL_CLUSTER_CPUS

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._clip: Any = None        # the driver's model (plan loads it; the in-process path reuses it)
        self._facts: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_clip": None}  # workers load their own model

    @property
    def cfg(self) -> ScoreConfig:
        return cast(ScoreConfig, self.config)

    # -- driver -------------------------------------------------------------------------
    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        from curation.models import load_clip

        cfg = self.cfg
        gpus = int(self.cluster_resources().get("GPU", 0)) if cfg.device == "auto" else 0
        plan = resolve_plan(cfg, gpus)
        clip = load_clip(cfg.model, cfg.pretrained)  # validates names/paths before anything is written
        self._clip = clip
        plan.update(label=clip.name, arch=clip.arch, dim=_embed_dim(clip),
                    pipe=PixelPipeline.from_preprocess(clip.preprocess))
        self._facts = {"device": plan["device"], "precision": plan["precision"], "decode": plan["decode"]}
        return plan

    def version_config(self, ds: Dataset, plan: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        # what decides the output: execution knobs (actors, batch size) stay out of the hash
        return {"model": cfg.model, "pretrained": cfg.pretrained, "draft": cfg.draft,
                "decode": plan["decode"], "precision": plan["precision"]}

    def resources(self) -> dict[str, float]:
        gpu = self._facts.get("device") == "cuda"
        return {"num_cpus": 1.0 if gpu else float(self.cfg.threads_per_actor), "num_gpus": 1.0 if gpu else 0.0}

    def _dispatch(self, job: Any, ds: Dataset, pending: list[int], on_done: Any) -> str:
        plan: dict[str, Any] = job.plan
        executor = self.choose_executor(ds, pending)
        if executor == "local":
            import torch

            before = torch.get_num_threads()
            # one core decodes; the rest run the model (intra-op threads beyond that only contend)
            torch.set_num_threads(max(1, _cores() - 1))
            try:
                super()._dispatch(job, ds, pending, on_done)
            finally:
                torch.set_num_threads(before)
            self._facts["executor"] = "local"
            return "local"
        res = self.cluster_resources()
        layout = cluster_plan(self.cfg, plan, int(res.get("GPU", 0)), int(res.get("CPU", 1)))
        self._facts.update(executor="ray", **layout)
        if layout["layout"] == "fused":
            super()._dispatch(job, ds, pending, on_done)  # the stage's actor pool, one shard per call
        else:
            from curation.score.pipeline import run_split

            self._facts["split_commits"] = run_split(self, job, pending, {**plan, **layout}, on_done)
        return "ray"

    def pool_size(self, n_pending: int) -> int:
        return min(n_pending, int(self._facts.get("actors") or super().pool_size(n_pending)))

    def finish(self, ds: Dataset, plan: dict[str, Any], stats: StageStats) -> None:
        stats.extra.update({"clip_model": plan["label"], **self._facts})
        self._clip = None

    # -- workers --------------------------------------------------------------------------
    def setup(self, plan: dict[str, Any]) -> Any:
        from curation.score.embed import ShardScorer

        cfg = self.cfg
        here = self._clip is not None  # in-process: reuse the loaded model and this process's threads
        return ShardScorer(cfg.model, cfg.pretrained, plan["device"], plan["precision"], plan["pipe"],
                           None if here else cfg.threads_per_actor, cfg.draft, cfg.batch_size,
                           clip=self._clip if here else None)

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        from curation.score.parts import PartsState

        if isinstance(state, PartsState):  # split layout: the model actors' part files
            results = state.results(shard.id, shard.meta)
        else:
            results = state.score_shard(shard.dataset, shard.id)
        columns, emb, stats = assemble_shard(shard.meta, results, plan["label"], plan["dim"])
        return ShardResult(columns=columns, embeddings=emb, embedding_model=plan["label"], stats=stats)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _embed_dim(clip) -> int:
    import torch

    with torch.inference_mode():
        return int(clip.model.encode_text(torch.zeros((1, clip.context_length), dtype=torch.long)).shape[-1])


