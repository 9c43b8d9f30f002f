"""The ``caption`` stage: synthetic captions, their CLIP scores and the mixing decision.

Adds ``synthetic_caption``, ``synthetic_clip_score`` and ``caption_source`` in a new
metadata version (rows unchanged, in order); tars are never touched (``reshard`` writes
the chosen captions). Each pending shard is a Ray task (retried if its node dies) that
commits its own shard, so a killed run resumes with the shards that are left.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from curation.caption.config import CaptionConfig
from curation.errors import ConfigError
from curation.io import Dataset
from curation.stage import Shard, ShardResult, ShardStage, StageContext, StageStats

_TYPES = {"synthetic_caption": pa.string(), "synthetic_clip_score": pa.float32(), "caption_source": pa.string()}


def scoring_model(ds: Dataset, cfg: CaptionConfig) -> tuple[str, str | None]:
    """The CLIP that scores pairs: ``clip_model`` if set, else the last ``score`` stage's model."""
    if cfg.clip_model:
        return cfg.clip_model, cfg.clip_pretrained
    for h in reversed(ds.history):
        if h.get("stage") == "score" and h.get("config", {}).get("model"):
            return h["config"]["model"], h["config"].get("pretrained")
    raise ConfigError("caption.clip_model: not set and the dataset has no `score` stage to take it from "
                      "(run `curate score` first or pass --clip-model)")


def check_model_name(name: str, key: str) -> None:
    """Fail before any work for a model name open_clip does not know (paths/hf-hub pass)."""
    import os

    from curation.models import available_models

    if name.startswith("hf-hub:") or os.path.exists(name) or name in available_models():
        return
    raise ConfigError(f"caption.{key}: unknown open_clip model {name!r}")


class CaptionStage(ShardStage):
    """Synthetic caption enrichment (CoCa decoding or retrieval) with the mixing policy.

    Each pending shard is captioned by a Ray task (models are cached per worker process),
    which commits its own metadata shard; see :class:`curation.stage.ShardStage`.
    """

    name = "caption"
    Config = CaptionConfig

    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        from curation.caption.retrieval import load_texts  # torch: not at import (`curate --help`)

        cfg: CaptionConfig = self.config  # type: ignore[assignment]
        clip_model, clip_pretrained = scoring_model(ds, cfg)
        check_model_name(clip_model, "clip_model")
        if cfg.method == "coca":
            check_model_name(cfg.model, "model")
        else:
            if not cfg.bank:
                raise ConfigError("caption.bank: retrieval needs a caption bank (a text file with one caption "
                                  "per line, a Parquet file or a dataset with a caption column)")
            load_texts(cfg.bank, "caption bank", ds.storage_options)  # a bad bank fails before any work
            if cfg.classes:
                load_texts(cfg.classes, "class labels", ds.storage_options)
        return {"clip_model": clip_model, "clip_pretrained": clip_pretrained,
                "config": cfg.model_dump(mode="json")}

    def version_config(self, ds: Dataset, plan: dict[str, Any]) -> dict[str, Any]:
        return {**self.config.semantic_dump(), "clip_model": plan["clip_model"],
                "clip_pretrained": plan["clip_pretrained"]}

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        import torch

        from curation.caption.worker import NEW_COLUMNS, caption_shard

        threads = torch.get_num_threads()  # the worker sets its own; an in-process run must not keep them
        try:
            cols = caption_shard(shard.id, url=shard.dataset.url, storage_options=shard.dataset.storage_options,
                                 version=shard.dataset.version, config=plan["config"],
                                 clip_model=plan["clip_model"], clip_pretrained=plan["clip_pretrained"])
        finally:
            torch.set_num_threads(threads)
        return ShardResult(columns={n: pa.array(cols[n], type=_TYPES[n]) for n in NEW_COLUMNS},
                           stats={"caption_source": dict(Counter(cols["caption_source"]))})

    def finish(self, ds: Dataset, plan: dict[str, Any], stats: StageStats) -> None:
        stats.extra.update({"method": self.config.method, "clip_model": plan["clip_model"]})  # type: ignore[attr-defined]
