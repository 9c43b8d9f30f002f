"""The Ray task bodies: one input shard -> one committed output shard."""
from __future__ import annotations

from collections import Counter
from typing import Any

from curation.download.config import DownloadConfig
from curation.download.worker import download_rows
from curation.io.writer import DatasetWriter


def attach_writer(url: str, storage_options: dict | None, run_id: str | None = None) -> DatasetWriter:
    """A DatasetWriter for a task writing shards into a dataset the driver already claimed.

    With the driver's ``run_id`` the task refuses to commit once that run lost its lease (a
    partitioned node's retry cannot interleave with the run that took over the output)."""
    return DatasetWriter.attach(url, storage_options, run_id=run_id)


def shard_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"samples": len(rows), "status": dict(Counter(r["status"] for r in rows))}


def download_shard_task(spec: dict[str, Any], *, cfg: dict[str, Any], out: str,
                        storage_options: dict | None, run_id: str | None = None) -> dict[str, Any]:
    """Download one shard's records and commit ``shards/<id>.tar`` + its metadata.

    Idempotent: a shard committed by an earlier (possibly killed) attempt is skipped, so
    Ray retries and reruns cost time, never duplicate samples.
    """
    config = DownloadConfig.model_validate(cfg)
    w = attach_writer(out, storage_options, run_id)
    sid = spec["shard"]
    if w.is_committed(sid):
        return {"shard": sid, "skipped": True}
    if "tar" in spec:
        from curation.download.wds import ingest_rows

        produced = ingest_rows(spec, config)
    else:
        from curation.download.inputs import read_shard

        produced = download_rows(read_shard(spec), config)  # reads only this shard's range
    with w.shard(sid) as sw:
        rows = [sw.add(row, image, config.encode_format) for row, image in produced]
    return {"shard": sid, "skipped": False, **shard_stats(rows)}
