"""The Ray task bodies: one input shard -> one committed output shard."""
from __future__ import annotations

from collections import Counter
from typing import Any

from curation.download.config import DownloadConfig
from curation.download.worker import download_rows
from curation.io.fs import get_fs
from curation.io.writer import DatasetWriter


def attach_writer(url: str, storage_options: dict | None) -> DatasetWriter:
    """A DatasetWriter for a task to write shards into a dataset the driver already claimed.

    Building one with ``DatasetWriter(...)`` would re-run the claim, which cleans temp files
    that sibling tasks are writing at that moment; shard writing needs only fs/root/version.
    """
    w = DatasetWriter.__new__(DatasetWriter)
    w.url = url.rstrip("/")
    w.storage_options = dict(storage_options or {})
    w.fs, w.root = get_fs(w.url, w.storage_options)
    w.version = 1
    return w


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
