"""The ``caption`` stage: synthetic captions, their CLIP scores and the mixing decision.

Adds ``synthetic_caption``, ``synthetic_clip_score`` and ``caption_source`` in a new
metadata version (rows unchanged, in order); tars are never touched (``reshard`` writes
the chosen captions). Each pending shard is a Ray task (retried if its node dies); the
driver commits each shard's table as its task finishes, so a killed run resumes with the
shards that are left.
"""
from __future__ import annotations

import pyarrow as pa

from curation.caption.config import CaptionConfig
from curation.caption.retrieval import load_texts
from curation.caption.worker import NEW_COLUMNS, caption_shard
from curation.errors import ConfigError
from curation.io import Dataset
from curation.runner.stage import Stage, StageContext

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


def with_columns(meta: pa.Table, cols: dict[str, list]) -> pa.Table:
    """``meta`` with the new columns appended (replacing any from an earlier caption run)."""
    for name in NEW_COLUMNS:
        if name in meta.column_names:
            meta = meta.drop_columns([name])
        meta = meta.append_column(name, pa.array(cols[name], type=_TYPES[name]))
    return meta


class CaptionStage(Stage):
    """Synthetic caption enrichment (CoCa decoding or retrieval) with the mixing policy."""

    name = "caption"
    Config = CaptionConfig

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        from curation.runner.ray_utils import map_tasks

        if ds is None:
            raise ConfigError("caption: needs an input dataset")
        cfg: CaptionConfig = self.config
        clip_model, clip_pretrained = scoring_model(ds, cfg)
        check_model_name(clip_model, "clip_model")
        if cfg.method == "coca":
            check_model_name(cfg.model, "model")
        else:
            load_texts(cfg.bank, "caption bank", ds.storage_options)  # a bad bank fails before any work
            if cfg.classes:
                load_texts(cfg.classes, "class labels", ds.storage_options)
        config = {**cfg.model_dump(mode="json"), "clip_model": clip_model, "clip_pretrained": clip_pretrained}
        vw = ds.new_version(self.name, config)
        pending, total = vw.pending_shards(), len(ds.shard_ids)
        stats = ctx.stats
        counts: dict[str, int] = {}
        done = [total - len(pending)]

        def commit(i: int, cols: dict[str, list]) -> None:
            sid = pending[i]
            meta = with_columns(ds.read_meta(sid), cols)
            vw.write_meta(sid, meta)
            for src in cols["caption_source"]:
                counts[src] = counts.get(src, 0) + 1
            done[0] += 1
            ctx.progress(done[0], total, meta.num_rows)

        map_tasks(caption_shard, pending, on_done=commit, num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                  url=ds.url, storage_options=ds.storage_options, version=ds.version, config=config,
                  clip_model=clip_model, clip_pretrained=clip_pretrained)
        if stats is not None:
            stats.samples_in = stats.samples_out = ds.num_samples
            stats.shards = total
            stats.extra.update({"caption_source": counts, "method": cfg.method, "clip_model": clip_model})
        return vw.commit(stats=stats.to_dict() if stats else None)
