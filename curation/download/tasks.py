"""The Ray task bodies: one input shard -> one committed output shard."""
from __future__ import annotations

from collections import Counter
from typing import Any

from curation.download.config import DownloadConfig
from curation.download.worker import download_rows
from curation.io.writer import DatasetWriter


def attach_writer(url: str, storage_options: dict | None) -> DatasetWriter:
    """A DatasetWriter for a task writing shards into a dataset the driver already claimed."""
    return DatasetWriter.attach(url, storage_options)


def shard_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"samples": len(rows), "status": dict(Counter(r["status"] for r in rows))}


def download_shard_task(spec: dict[str, Any], *, cfg: dict[str, Any], out: str,
                        storage_options: dict | None) -> dict[str, Any]:
    """Download one shard's records and commit ``shards/<id>.tar`` + its metadata.

    Idempotent: a shard committed by an earlier (possibly killed) attempt is skipped, so
    Ray retries and reruns cost time, never duplicate samples.
    """
    config = DownloadConfig.model_validate(cfg)
    w = attach_writer(out, storage_options)
    sid = spec["shard"]
    if w.is_committed(sid):
        return {"shard": sid, "skipped": True}
    if "tar" in spec:
        from curation.download.wds import ingest_rows

        produced = ingest_rows(spec, config)
    else:
        produced = download_rows(spec["rows"], config)
    with w.shard(sid) as sw:
        rows = [sw.add(row, image, config.encode_format) for row, image in produced]
    return {"shard": sid, "skipped": False, **shard_stats(rows)}
