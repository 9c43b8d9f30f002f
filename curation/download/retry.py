"""``--retry-failed``: re-fetch the rows whose status is retryable, as a new metadata version.

Where the new images go: a shard with retryable rows gets a *new* tar object,
``shards/NNNNNN.v<N>.tar``, written by :meth:`curation.io.VersionWriter.extend_shard`: the
committed tar's members with their exact bytes and offsets, then the recovered images. So
every older metadata version still addresses valid bytes, the new version's rows point at
the appended members, and no sample is duplicated (a retried row keeps its key and uid; it
had no member before). Shards without retryable rows keep their tar.

Crash safety: committed tars are never rewritten. The manifest commit is the one step that
switches the dataset to the new tars (and version); the replaced tars are deleted after it.
A kill at any step leaves readers either the old state (old manifest, old tars, all still
there) or the new one, and a rerun finishes the same version: shards whose new metadata
is committed are skipped, the others are recomputed, leftovers of a killed attempt are
removed. This module writes no tar bytes and never edits a manifest, in memory or on disk.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from curation import status as st
from curation.download.config import DownloadConfig
from curation.download.worker import download_rows
from curation.io import Dataset
from curation.io.lease import acquire
from curation.io.writer import VersionWriter, remove_unlisted_tars

MapFn = Callable[..., list[Any]]


def _local_map(fn: Callable[..., Any], items: Sequence[Any], **kwargs: Any) -> list[Any]:
    kwargs.pop("max_in_flight", None)
    return [fn(item, **kwargs) for item in items]


def retry_failed(out: str, cfg: DownloadConfig, storage_options: dict | None = None, *,
                 map_fn: MapFn | None = None) -> Dataset:
    """Re-fetch retryable failures of dataset ``out`` with ``cfg``; commit version N+1.

    Args:
        out: the dataset.
        cfg: the download config (fetch settings).
        storage_options: fsspec options for ``out``.
        map_fn: ``map_fn(fn, items, max_in_flight=..., **kwargs)`` running the per-shard tasks
            (the stage passes its ``Stage.map``: Ray tasks); default: in this process.

    Returns the dataset (unchanged when nothing is retryable).
    """
    ds = Dataset(out, storage_options)
    retryable = {sid: sum(map(st.is_retryable, ds.read_meta(sid, columns=["status"]).column("status").to_pylist()))
                 for sid in ds.shard_ids}
    todo = [sid for sid, n in retryable.items() if n]
    if not todo:
        hold = acquire(ds.fs, ds.root, ds.url, ds, purpose="retry-failed cleanup")
        try:
            remove_unlisted_tars(ds)  # what a kill right after an earlier retry's commit left
        finally:
            hold.release()
        return ds
    vw = VersionWriter(ds, "download", {**cfg.model_dump(mode="json"), "retry_failed": True})
    remove_unlisted_tars(ds)
    pending = vw.pending_shards()
    (map_fn or _local_map)(_retry_task, pending, max_in_flight=cfg.processes_count, out=out,
                                     version=vw.version, parent=ds.version, cfg=cfg.model_dump(mode="json"),
                                     storage_options=storage_options, run_id=vw.run_id)
    counts: Counter = Counter()
    for sid in ds.shard_ids:
        counts.update(ds.read_meta(sid, columns=["status"], version=vw.version).column("status").to_pylist())
    # from the data, not from this attempt's tasks: a resumed retry commits the same stats
    stats = {"status": dict(counts), "retried": sum(retryable.values())}
    return vw.commit(stats=stats, extended=todo)


def _retry_task(shard_id: int, *, out: str, version: int, parent: int, cfg: dict, storage_options,
                run_id: str | None = None) -> dict[str, Any]:
    config = DownloadConfig.model_validate(cfg)
    ds = Dataset(out, storage_options, version=parent)
    vw = VersionWriter.attach(ds, version, run_id=run_id)
    table = ds.read_meta(shard_id)
    rows = table.to_pylist()
    idx = [i for i, r in enumerate(rows) if st.is_retryable(r["status"])]
    if not idx:
        vw.write_meta(shard_id, table)
        return {"shard": shard_id, "retried": 0}
    images: dict[int, tuple[bytes, str]] = {}
    for i, (row, image) in zip(idx, download_rows([rows[i] for i in idx], config)):
        rows[i] = {**row, "tar_offset": None, "tar_size": None}
        if image is not None:
            images[i] = (image, config.encode_format)
    res = vw.extend_shard(shard_id, rows, images, schema=table.schema)
    return {**res, "retried": len(idx)}


__all__ = ["retry_failed"]
