"""The ``classify`` stage: ``<name>_score`` columns from stored embeddings, no image decoding.

``curate classify DS --head aesthetic=sac+logos+ava1-l14-linearMSE.pth --head nsfw=nsfw.pth``
reads each shard's ``emb/`` rows (row-aligned with the metadata) and applies every head; rows
without an embedding (failed downloads, unscored samples) get a null score. Heads are loaded
and checked against the dataset's embedding model and dimension on the driver, before any
version is started, so a mismatch is a one-line error and nothing is written; their weights
travel to the workers inside the plan (a head file need not exist on every node).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import field_validator

from curation.classify.heads import Head, load_head
from curation.config import StageConfig, execution
from curation.errors import ConfigError
from curation.io import Dataset
from curation.stage import Shard, ShardResult, ShardStage, StageContext

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ClassifyConfig(StageConfig):
    """Options of ``classify``.

    Attributes:
        heads: score name -> head file; writes ``<name>_score`` (``aesthetic``, ``nsfw``,
            ``watermark``...). Names are lower-case identifiers.
        allow_model_mismatch: apply a head to embeddings of a model other than the one it was
            made for (the dimension must still match). Off: that is an error.
        executor: ``auto``/``ray``/``local``.
    """

    heads: dict[str, str]
    allow_model_mismatch: bool = False
    executor: str = execution("auto")

    @field_validator("heads")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("give at least one head as name=PATH")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"head name {name!r} must be a lower-case identifier (it becomes {name}_score)")
        return v


def parse_head_specs(specs: list[str]) -> dict[str, str]:
    """``["aesthetic=a.pth", ...]`` -> ``{"aesthetic": "a.pth"}`` (CLI form)."""
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--head {s!r}: expected NAME=PATH")
        out[name.strip()] = path.strip()
    return out


def embedding_matrix(emb: pa.Table, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(``N x dim`` float32 with zeros where null, valid mask) of an ``image_emb`` column."""
    col = emb.column("image_emb").combine_chunks()
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    out = np.zeros((len(col), dim), dtype=np.float32)
    if valid.any():
        vals = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = np.asarray(vals, dtype=np.float32).reshape(-1, dim)
    return out, valid


def score_heads(heads: dict[str, Head], emb: pa.Table, dim: int) -> dict[str, pa.Array]:
    """``{"<name>_score": float32 array}`` for one shard's embeddings (null where no embedding)."""
    x, valid = embedding_matrix(emb, dim)
    cols = {}
    for name, head in heads.items():
        s = head.scores(x[valid]) if valid.any() else np.zeros(0, dtype=np.float32)
        full = np.zeros(len(valid), dtype=np.float32)
        full[valid] = s
        cols[f"{name}_score"] = pa.array(full, type=pa.float32(), mask=~valid)
    return cols


class ClassifyStage(ShardStage):
    """Add ``<name>_score`` for every configured head; see the module docstring."""

    name = "classify"
    Config = ClassifyConfig
    local_max_samples = 200_000  # a few matrix products per shard: Ray tasks only pay off at scale

    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        cfg: ClassifyConfig = self.config  # type: ignore[assignment]
        heads = {}
        for name, path in cfg.heads.items():
            head = load_head(path)
            head.check(ds.embeddings, ds.url, cfg.allow_model_mismatch)
            heads[name] = head
        return {"heads": heads, "dim": int(ds.embeddings["dim"])}  # type: ignore[index]

    def version_config(self, ds: Dataset, plan: dict[str, Any]) -> dict[str, Any]:
        # the head's content, not only its path, decides the scores
        import hashlib

        digests = {}
        for name, path in self.config.heads.items():  # type: ignore[attr-defined]
            with open(path, "rb") as f:
                digests[name] = hashlib.sha256(f.read()).hexdigest()[:16]
        return {**self.config.semantic_dump(), "head_sha256": digests,
                "head_kinds": {n: h.kind for n, h in plan["heads"].items()}}

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        emb = shard.embeddings()
        if emb is None:
            raise ConfigError(f"{shard.dataset.url}: shard {shard.id} has no embeddings")
        cols = score_heads(plan["heads"], emb, plan["dim"])
        scored = len(emb) - next(iter(cols.values())).null_count
        return ShardResult(columns=cols, stats={"samples_out": scored,
                                                "dropped": {"no_embedding": shard.meta.num_rows - scored}})

    def finish(self, ds: Dataset, plan: dict[str, Any], stats) -> None:
        stats.extra["heads"] = {n: {"kind": h.kind, "source": h.source} for n, h in plan["heads"].items()}


def classify(dataset: str, heads: dict[str, str], *, storage_options: dict | None = None, **options: Any) -> Dataset:
    """Library entry point: ``classify("/data/ds", {"aesthetic": "a.pth"})`` -> the new version."""
    stage = ClassifyStage({"heads": heads, **options})
    ds = Dataset(dataset, storage_options)
    return stage(ds, StageContext(output=dataset, storage_options=storage_options or {}))
