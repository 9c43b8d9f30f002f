"""``curate block DS --list F``: apply a hash list that arrived after the download.

Matches the stored ``sha256`` (bytes as downloaded) and ``pdq`` columns against the lists, so
no image is decoded. The new metadata version keeps every row (one row per input record) but
a match becomes ``status = blocked_hash`` with ``blocklist = <name>``, loses its tar address
(``tar_offset``/``tar_size`` null, so nothing downstream - reshard, the streaming index, the
report's thumbnails - can reach its bytes), its image facts and, when the column exists,
``keep``. When the dataset has embeddings a new embeddings version is written with the
matches' vectors nulled. ``curate reshard`` then materialises a dataset without those bytes;
the old tars keep them until the dataset is deleted or resharded (tars are immutable).

MD5 entries cannot match here (the download stores no MD5); they are counted as
``md5_entries_unchecked`` in the stats. A dataset downloaded without PDQ (``pdq: false``)
matches its PDQ entries only by exact bytes (counted as ``pdq_unavailable``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curation.blocklist.lists import HashList, load_lists
from curation.blocklist.pdq import DEFAULT_DISTANCE
from curation.blocklist.screen import BLOCKED_HASH, match_pdq
from curation.config import StageConfig, execution
from curation.io import Dataset
from curation.stage import Shard, ShardResult, ShardStage, StageContext

_CLEARED = ("sha256", "original_size", "original_width", "original_height", "width", "height", "phash", "pdq",
            "pdq_quality", "tar_offset", "tar_size", "image_ext")


class BlockConfig(StageConfig):
    """Options of ``block``.

    Attributes:
        lists: hash list files (``PATH`` or ``NAME=PATH``; one hash a line, or CSV with ``hash``
            and optional ``kind``).
        pdq_distance: PDQ match radius in bits (of 256); PDQ recommends 31.
        executor: ``ray`` (shard tasks), ``local`` (in this process) or ``auto`` (the stage decides).
    """

    lists: list[str]
    pdq_distance: int = Field(default=DEFAULT_DISTANCE, ge=0, le=256)
    executor: str = execution("auto")

    @field_validator("lists")
    @classmethod
    def _load(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one list")
        load_lists(tuple(v))  # missing or malformed files fail here, before anything is written
        return v


def match_rows(meta: pa.Table, lists: list[HashList], distance: int) -> list[tuple[str, str] | None]:
    """Per row: (list name, why) when its stored sha256 or pdq matches a list, else None."""
    n = meta.num_rows
    sha = meta.column("sha256").to_pylist() if "sha256" in meta.column_names else [None] * n
    pdq = meta.column("pdq").to_pylist() if "pdq" in meta.column_names else [None] * n
    out: list[tuple[str, str] | None] = []
    for s, p in zip(sha, pdq):
        hit = next(((hl.name, "sha256 of the downloaded bytes") for hl in lists if s and s in hl.sha256), None)
        if hit is None and p:
            near = match_pdq(p, lists, distance)
            hit = (near[0], f"PDQ within {near[1]} bits") if near else None
        out.append(hit)
    return out


class BlockStage(ShardStage):
    """Drop the rows matching later hash lists; see the module docstring."""

    name = "block"
    Config = BlockConfig
    local_max_samples = 500_000  # set lookups and one XOR per row: in-process unless the dataset is large

    def plan(self, ds: Dataset, ctx: StageContext) -> dict[str, Any]:
        lists = load_lists(tuple(self.config.lists))  # type: ignore[attr-defined]
        return {"lists": lists, "emb": ds.embeddings, "has_pdq": "pdq" in ds.columns}

    def version_config(self, ds: Dataset, plan: dict[str, Any]) -> dict[str, Any]:
        # the lists' content decides the result, not only their paths
        import hashlib

        h = hashlib.sha256()
        for hl in plan["lists"]:
            h.update(hl.name.encode())
            for s in sorted(hl.sha256):
                h.update(s.encode())
            h.update(hl.pdq.tobytes())
        return {**self.config.semantic_dump(), "lists_sha256": h.hexdigest()[:16]}

    def process_shard(self, state: Any, shard: Shard, plan: dict[str, Any]) -> ShardResult:
        meta = shard.meta
        hits = match_rows(meta, plan["lists"], self.config.pdq_distance)  # type: ignore[attr-defined]
        blocked = np.array([h is not None for h in hits], dtype=bool)
        cols: dict[str, Any] = {}
        if blocked.any():
            status = meta.column("status").to_pylist()
            error = meta.column("error").to_pylist()
            names: list[str | None] = (meta.column("blocklist").to_pylist() if "blocklist" in meta.column_names
                                       else [None] * len(hits))
            for i, h in enumerate(hits):
                if h is not None:
                    status[i], error[i], names[i] = BLOCKED_HASH, f"matched {h[1]} on blocklist {h[0]!r}", h[0]
            cols.update(status=status, error=error, blocklist=names)
            for c in _CLEARED:
                if c in meta.column_names:
                    vals = meta.column(c).to_pylist()
                    cols[c] = [None if b else v for v, b in zip(vals, blocked)]
            if "keep" in meta.column_names:
                cols["keep"] = [False if b else v for v, b in zip(meta.column("keep").to_pylist(), blocked)]
        elif "blocklist" not in meta.column_names:
            cols["blocklist"] = pa.nulls(meta.num_rows, pa.string())
        emb = None
        if plan["emb"]:
            emb = shard.embeddings()
            if emb is not None and blocked.any():
                mask = pa.array(blocked)
                emb = pa.table({c: pc.if_else(mask, pa.nulls(len(mask), emb.column(c).type), emb.column(c))  # type: ignore[attr-defined]
                                if c != "uid" else emb.column(c) for c in emb.column_names},
                               schema=emb.schema)
        by_list: dict[str, int] = {}
        for h in hits:
            if h is not None:
                by_list[h[0]] = by_list.get(h[0], 0) + 1
        return ShardResult(columns=cols, embeddings=emb, embedding_model=(plan["emb"] or {}).get("model"),
                           stats={"samples_out": meta.num_rows - int(blocked.sum()),
                                  "dropped": {BLOCKED_HASH: int(blocked.sum())} if blocked.any() else {},
                                  "blocked_by_list": by_list})

    def finish(self, ds: Dataset, plan: dict[str, Any], stats) -> None:
        stats.extra["md5_entries_unchecked"] = sum(len(hl.md5) for hl in plan["lists"])
        if not plan["has_pdq"]:
            stats.extra["pdq_unavailable"] = sum(len(hl.pdq) for hl in plan["lists"])


def block(dataset: str, lists: list[str], *, storage_options: dict | None = None, **options: Any) -> Dataset:
    """Library entry point: ``block("/data/ds", ["ncmec=list.csv"])`` -> the new version."""
    ds = Dataset(dataset, storage_options)
    return BlockStage({"lists": lists, **options})(ds, StageContext(output=dataset,
                                                                    storage_options=storage_options or {}))
