"""``--retry-failed``: re-fetch the rows whose status is retryable, as a new metadata version.

Where the new images go: a shard with retried rows gets its tar replaced, atomically, by a
strict *extension* of itself - the committed members keep their exact bytes and offsets, the
recovered images are appended after them. So every older metadata version still addresses
valid bytes (old ``tar_offset`` values never move), the new version's rows point at the
appended members, and no sample is duplicated (a retried row keeps its key and uid; it had
no member before). Shards without retryable rows keep their tar untouched.

Crash safety: the appended part is recomputed from the parent version - the prefix kept is
everything before the first member whose key is a failed row of the parent - so a killed
retry, rerun, yields the same tar bytes and metadata as an uninterrupted one.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections import Counter
from typing import Any

import pyarrow as pa

from curation import status as st
from curation.download.config import DownloadConfig
from curation.download.worker import download_rows
from curation.io import Dataset
from curation.io import format as fmt
from curation.io.fs import atomic_put_file
from curation.runner.ray_utils import map_tasks

_BLOCK = tarfile.BLOCKSIZE


def retry_failed(out: str, cfg: DownloadConfig, storage_options: dict | None = None) -> Dataset:
    """Re-fetch retryable failures of dataset ``out`` with ``cfg``; commit version N+1.

    Returns the dataset (unchanged when nothing is retryable).
    """
    ds = Dataset(out, storage_options)
    todo = {sid: ds.read_meta(sid, columns=["status"]).column("status").to_pylist() for sid in ds.shard_ids}
    if not any(st.is_retryable(s) for statuses in todo.values() for s in statuses):
        return ds
    vw = ds.new_version("download", {**cfg.model_dump(mode="json"), "retry_failed": True})
    pending = vw.pending_shards()
    results = map_tasks(_retry_task, pending, max_in_flight=cfg.processes_count, out=out,
                        version=vw.version, parent=ds.version, cfg=cfg.model_dump(mode="json"),
                        storage_options=storage_options)
    for res in results:  # the manifest lists the extended tars' sizes
        if res.get("tar_bytes") is not None:
            info = next(s for s in ds.manifest["shards"] if s["id"] == res["shard"])
            info["tar_bytes"], info["num_images"] = res["tar_bytes"], res["num_images"]
    for sid in ds.shard_ids:
        if sid not in pending:  # committed by an earlier, killed attempt: refresh its sizes
            info = next(s for s in ds.manifest["shards"] if s["id"] == sid)
            info["tar_bytes"] = int(ds.fs.size(ds.tar_path(sid)))
            meta = ds.read_meta(sid, columns=["tar_offset"], version=vw.version).column("tar_offset")
            info["num_images"] = len(meta) - meta.null_count
    counts: Counter = Counter()
    for sid in ds.shard_ids:
        counts.update(ds.read_meta(sid, columns=["status"], version=vw.version).column("status").to_pylist())
    stats = {"status": dict(counts), "retried": sum(r.get("retried", 0) for r in results)}
    return vw.commit(stats=stats)


def _retry_task(shard_id: int, *, out: str, version: int, parent: int, cfg: dict, storage_options) -> dict[str, Any]:
    config = DownloadConfig.model_validate(cfg)
    ds = Dataset(out, storage_options, version=parent)
    vw = _attach_version(ds, version)
    table = ds.read_meta(shard_id)
    rows = table.to_pylist()
    idx = [i for i, r in enumerate(rows) if st.is_retryable(r["status"])]
    if not idx:
        vw.write_meta(shard_id, table)
        return {"shard": shard_id, "retried": 0}
    failed_keys = {r["key"] for r in rows if r["tar_offset"] is None}
    tar_local, offset = _copy_prefix(ds, shard_id, failed_keys)
    try:
        with open(tar_local, "r+b") as f:
            f.seek(offset)
            for i, (row, image) in zip(idx, download_rows([rows[i] for i in idx], config)):
                row = {k: v for k, v in row.items()}
                if image is not None:
                    row["tar_offset"], offset = _append_sample(f, offset, row, image, config.encode_format)
                    row["tar_size"], row["image_ext"] = len(image), config.encode_format
                rows[i] = row
            f.write(b"\0" * (2 * _BLOCK))  # end-of-archive marker
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        tar_bytes = os.path.getsize(tar_local)
        atomic_put_file(ds.fs, tar_local, ds.tar_path(shard_id))
    finally:
        if os.path.exists(tar_local):
            os.unlink(tar_local)
    new = _rows_to_table(rows, table.schema)
    vw.write_meta(shard_id, new)
    return {"shard": shard_id, "retried": len(idx), "tar_bytes": tar_bytes,
            "num_images": sum(1 for r in rows if r["tar_offset"] is not None)}


def _attach_version(ds: Dataset, version: int):
    """A VersionWriter for an already chosen version number (no new number is picked)."""
    from curation.io.writer import VersionWriter

    return VersionWriter.attach(ds, version)


def _copy_prefix(ds: Dataset, shard_id: int, failed_keys: set[str]) -> tuple[str, int]:
    """Copy the tar up to the end of its last member that the parent version knows about."""
    fd, local = tempfile.mkstemp(prefix=".curation-retry-", suffix=".tar.tmp")
    end = 0
    with ds.fs.open(ds.tar_path(shard_id), "rb") as src, os.fdopen(fd, "wb") as dst:
        with tarfile.open(fileobj=src, mode="r:") as tf:
            for m in tf:
                if m.name.split(".", 1)[0] in failed_keys:
                    break  # appended by an earlier, killed retry: recomputed below
                end = m.offset_data + ((m.size + _BLOCK - 1) // _BLOCK) * _BLOCK
        src.seek(0)
        remaining = end
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            remaining -= len(chunk)
    return local, end


def _member(f, offset: int, name: str, data: bytes) -> tuple[int, int]:
    """Write one member at ``offset``; return (data offset, next offset). Same header fields
    as :class:`~curation.io.writer.ShardWriter` so tars look alike."""
    fmt.validate_member_name(name)
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    f.seek(offset)
    f.write(header + data + b"\0" * (-len(data) % _BLOCK))
    return offset + len(header), offset + len(header) + len(data) + (-len(data) % _BLOCK)


def _append_sample(f, offset: int, row: dict, image: bytes, ext: str) -> tuple[int, int]:
    data_off, offset = _member(f, offset, f"{row['key']}.{ext}", image)
    row.update(tar_offset=data_off, tar_size=len(image), image_ext=ext)
    caption = row.get("caption")
    _, offset = _member(f, offset, f"{row['key']}.txt", ("" if caption is None else str(caption)).encode())
    _, offset = _member(f, offset, f"{row['key']}.json", json.dumps(row, sort_keys=True, default=str).encode())
    return data_off, offset


def _rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


__all__ = ["retry_failed", "io"]
