"""A continual CLIP run over ordered slices (TiC-CLIP protocol), resumable after a kill.

Per slice ``k``: build the pool (slice ``k`` + the replay buffer of earlier slices), warm
start from the model after slice ``k-1`` with a fresh AdamW and a restarted cosine
schedule, train ``steps`` global batches (Mod-X against a frozen copy of the slice ``k-1``
model when ``loss.modx_alpha > 0``), save ``slices/<k>-<name>/`` (a ``load_clip`` folder),
then evaluate on every slice's held-out set. State folders every ``checkpoint_every`` steps
and at each slice's end make a killed run resume at the same sample and step.

Curated-dataset slices are streamed (:mod:`curation.train.batches`): the pool is a
``StreamingDataset.mix`` of the slice and its replay subsets, and each state folder holds
the loader's ``state_dict()`` (``position.loader``), so a resumed run's next batch is the
one the killed run would have drawn. Parquet slices (the synthetic seed/eval sets) are
decoded once into tensors and sampled by ``PoolSampler`` (``position.sampler``).

Outputs under ``out``: ``checkpoints/``, ``slices/``, ``ledger/<k>-<name>.parquet`` (the
pool's uids and source slice), ``eval_rows.json``, ``metrics.parquet``, ``summary.json``,
``heatmap.png``. The exposure ledger of a checkpoint is its ``state.json``'s ``exposure``
(per source: slice, dataset, ``where``, whether it is a uid subset listed in the pool
ledger, sample count; the order seed and global batch) plus its ``position``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation.errors import ConfigError
from curation.models import save_checkpoint
from curation.train.batches import CacheBatches, StreamBatches, open_pool_stream
from curation.train.checkpoint import latest_state, load_state, save_state
from curation.train.config import RunConfig
from curation.train.data import TensorCache
from curation.train.evaluate import retrieval_metrics
from curation.train.loop import frozen_copy, train_step
from curation.train.metrics import write_metrics
from curation.train.optim import cosine_lr, make_optimizer, set_lr
from curation.train.replay import select_replay
from curation.train.seed import create_train_model
from curation.train.sources import TrainSlice, load_slice, load_train_slice

log = logging.getLogger(__name__)


def _dist() -> tuple[int, int]:
    """(rank, world) — joins a torchrun gloo group when launched by torchrun."""
    import torch.distributed as dist

    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _cat(parts: list[TensorCache]) -> TensorCache:
    return TensorCache(torch.cat([p.images for p in parts]), torch.cat([p.tokens for p in parts]),
                       sum((p.captions for p in parts), []), sum((p.uids for p in parts), []),
                       [lab for p in parts for lab in (p.labels or [None] * len(p))],
                       sum((p.nbytes or [0] * len(p) for p in parts), []))


def pool_parts(cfg: RunConfig, k: int, train: list[TrainSlice]) -> list[tuple[int, np.ndarray | None]]:
    """Slice ``k`` (all of it: ``None``) and, per earlier slice with a non-empty replay
    buffer, the row indices replayed from it: ``[(slice index, rows or None), ...]``."""
    chosen = select_replay(cfg.replay.policy, [t.uids for t in train[:k]], current_size=len(train[k]),
                           budget_samples=cfg.replay.budget_samples, budget_bytes=cfg.replay.budget_bytes,
                           prev_nbytes=[t.nbytes for t in train[:k]], seed=cfg.seed)
    parts: list[tuple[int, np.ndarray | None]] = [(k, None)]
    for j, idx in enumerate(chosen):
        if len(idx):
            parts.append((j, None if len(idx) == len(train[j]) else idx))
    return parts


def build_pool(cfg: RunConfig, k: int, train: list[TrainSlice]) -> tuple[TensorCache, list[str]]:
    """Slice ``k`` plus its replay buffer as one TensorCache (Parquet slices), and each row's source slice."""
    parts, source = [], []
    for j, idx in pool_parts(cfg, k, train):
        cache = train[j].cache
        if cache is None:
            raise RuntimeError(f"build_pool: slice {cfg.slices[j].name!r} is streamed, it has no TensorCache")
        parts.append(cache if idx is None else cache.subset(idx))
        source += [cfg.slices[j].name] * len(parts[-1])
    return _cat(parts), source


def _pool_ledger(parts, train: list[TrainSlice]) -> tuple[list[str], list[str]]:
    uids, source = [], []
    for j, idx in parts:
        rows = train[j].uids if idx is None else [train[j].uids[i] for i in idx.tolist()]
        uids += rows
        source += [train[j].name] * len(rows)
    return uids, source


def _evaluate(model: Any, k: int, cfg: RunConfig, evals: list[TensorCache], tokenizer: Any) -> list[dict]:
    rows = []
    name = cfg.slices[k].name if k >= 0 else "(init)"
    for j, cache in enumerate(evals):
        for metric, value in retrieval_metrics(model, cache, tokenizer, cfg.zeroshot_template).items():
            rows.append({"train_index": k, "train_slice": name, "eval_index": j,
                         "eval_slice": cfg.slices[j].name, "metric": metric, "value": value})
    return rows


def _load_data(cfg: RunConfig, preprocess, tokenizer) -> tuple[list[TrainSlice], list[TensorCache]]:
    train, evals = [], []
    for s in cfg.slices:
        train.append(load_train_slice(s.name, s.dataset, s.where, preprocess, tokenizer, cfg.storage_options))
        ev_ds = s.eval_dataset or cfg.eval_dataset or s.dataset
        ev_where = s.eval_where if s.eval_where is not None else s.where
        evals.append(load_slice(ev_ds, ev_where, preprocess, tokenizer, cfg.storage_options))
    kinds = {t.streamed for t in train}
    if len(kinds) > 1 and cfg.replay.policy != "none":
        raise ConfigError("slices: replay mixes slices of one kind only (all curated datasets or all Parquet files)")
    return train, evals


def run_continual(cfg: RunConfig, *, on_step: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train ``cfg``'s slices in order (resuming from ``cfg.out`` if a state exists).

    Args:
        cfg: the run spec.
        on_step: called as ``on_step(slice_index, steps_done, loss_parts)`` after each step.
    Returns:
        the summary ``{metric: {forgetting, mean_forgetting, backward_transfer, ...}}``.
    """
    rank, world = _dist()
    os.makedirs(cfg.out, exist_ok=True)
    model, preprocess, tokenizer = create_train_model(cfg.model.name, cfg.model.pretrained, cfg.seed)
    arch = getattr(model, "_curation_arch", None) or _arch(cfg)
    train, evals = _load_data(cfg, preprocess, tokenizer)
    rows_path = os.path.join(cfg.out, "eval_rows.json")
    resume = latest_state(cfg.out)
    start = json.load(open(os.path.join(resume, "state.json"))) if resume else {"slice": 0, "step": 0}
    rows = json.load(open(rows_path)) if resume and os.path.exists(rows_path) else []
    if resume:
        load_state(resume, model, None)  # weights now; optimizer below, once it exists
    elif rank == 0:
        rows = _evaluate(model, -1, cfg, evals, tokenizer)
    for k in range(start["slice"], len(cfg.slices)):
        step0 = start["step"] if k == start["slice"] else 0
        rows = _train_slice(cfg, k, step0, resume if k == start["slice"] else None, model, arch,
                            train, evals, preprocess, tokenizer, rows, rank, world, on_step)
    summary = write_metrics(cfg.out, rows, [s.name for s in cfg.slices]) if rank == 0 else {}
    _barrier()
    return summary


def _train_slice(cfg, k, step0, resume, model, arch, train, evals, preprocess, tokenizer, rows, rank, world, on_step):
    sl, steps = cfg.slices[k], cfg.slice_steps(k)
    parts = pool_parts(cfg, k, train)
    ledger = os.path.join(cfg.out, "ledger", f"{k:03d}-{sl.name}.parquet")
    if rank == 0 and not os.path.exists(ledger):
        uids, source = _pool_ledger(parts, train)
        os.makedirs(os.path.dirname(ledger), exist_ok=True)
        pq.write_table(pa.table({"uid": uids, "source_slice": source}), ledger + ".tmp")
        os.replace(ledger + ".tmp", ledger)
    old = None
    if cfg.loss.modx_alpha > 0 and k > 0:
        old = frozen_copy(model)
        if resume and step0 > 0:  # the teacher is the model as slice k-1 left it
            from safetensors.torch import load_file

            old.load_state_dict(load_file(os.path.join(_slice_dir(cfg, k - 1), "model.safetensors")))
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    seed = cfg.seed * 1009 + k
    # what this slice trains on: per source, the slice's subset spec (a replay subset's uids
    # are the ledger rows of that source slice); with the loader/sampler position in each
    # checkpoint this is the exact exposure of every checkpoint
    sources = [{"slice": train[j].name, "dataset": train[j].dataset, "where": train[j].where,
                "subset": idx is not None} for j, idx in parts]
    if train[k].streamed:
        stream_sources = [{"dataset": train[j].dataset, "where": train[j].where,
                           "uids": None if idx is None else [train[j].uids[i] for i in idx.tolist()]}
                          for j, idx in parts]
        _, loader = open_pool_stream(stream_sources, transform=preprocess, seed=seed, global_batch=cfg.batch_size,
                                     storage_options=cfg.storage_options, num_workers=cfg.data_workers)
        for src, st in zip(sources, stream_sources):
            src["samples"] = st["samples"]
        batches: Any = StreamBatches(loader, tokenizer)
    else:
        pool, _ = build_pool(cfg, k, train)
        for src, (j, idx) in zip(sources, parts):
            src["samples"] = len(train[j]) if idx is None else len(idx)
        batches = CacheBatches(pool, cfg.batch_size, seed)
    if resume and step0 > 0:
        st = load_state(resume, model, opt)
        batches.load_state_dict(st["position"])
    net = _wrap(model, world)

    def state(step: int) -> dict:
        return {"slice": k, "step": step, "slice_name": sl.name, "position": batches.state_dict(),
                "exposure": {"kind": "stream" if train[k].streamed else "cache", "sources": sources,
                             "pool_ledger": os.path.relpath(ledger, cfg.out), "order_seed": seed,
                             "replay": cfg.replay.model_dump(), "global_batch": cfg.batch_size,
                             "samples_seen": step * cfg.batch_size}}

    for step in range(step0, steps):
        set_lr(opt, cosine_lr(step, steps, cfg.lr, min(cfg.warmup_steps, steps - 1)))
        images, tokens = batches.next()
        parts_ = train_step(net, opt, images, tokens, cfg.loss, old)
        if on_step:
            on_step(k, step + 1, parts_)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps and rank == 0:
            save_state(cfg.out, model, opt, state(step + 1))
        _barrier() if (step + 1) % cfg.checkpoint_every == 0 else None
    batches.close()
    if rank == 0:
        save_checkpoint(model, arch, _slice_dir(cfg, k), extra={"slice": sl.name, "slice_index": k, "steps": steps})
        rows = [r for r in rows if r["train_index"] != k] + _evaluate(model, k, cfg, evals, tokenizer)
        with open(rows_path := os.path.join(cfg.out, "eval_rows.json.tmp"), "w") as f:
            json.dump(rows, f)
        os.replace(rows_path, rows_path[:-4])
        # next work item: slice k+1 from step 0 (weights only; optimizer restarts per slice)
        save_state(cfg.out, model, None, {**state(steps), "slice": k + 1, "step": 0})
    _barrier()
    return rows


def _wrap(model: torch.nn.Module, world: int) -> Any:
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def _slice_dir(cfg: RunConfig, k: int) -> str:
    return os.path.join(cfg.out, "slices", f"{k:03d}-{cfg.slices[k].name}")


def _arch(cfg: RunConfig) -> str:
    from curation.models import _resolve

    return _resolve(cfg.model.name, cfg.model.pretrained)[0]


def load_run_config(path: str, overrides: dict | None = None) -> RunConfig:
    """Read a YAML/JSON run spec (``out`` defaults to beside the file) into a RunConfig."""
    from curation.config import load_yaml_mapping

    data = load_yaml_mapping(path, "run spec")
    data = {**data, **(overrides or {})}
    return RunConfig.parse(data, where=os.path.basename(path))
