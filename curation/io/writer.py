"""Writing datasets: shards + metadata, new metadata versions, and the manifest.

Commit protocol (DESIGN.md section 3): every file is written under a hidden temporary
name and moved into place atomically (one PUT on object stores); a shard counts as
committed once its metadata Parquet exists (the tar is moved first); the manifest is
written last. A killed writer therefore leaves nothing a reader sees, and a rerun skips
committed shards and overwrites the rest. Tar bytes are deterministic (fixed mtime,
owner and order) so a rerun produces identical shards.

One writer per output: :class:`DatasetWriter` and :class:`VersionWriter` hold the output's
writer lease (:mod:`curation.io.lease`) from construction to commit; a second run is
refused with an error naming the holder. Ray tasks write through ``attach(...)`` under the
holder's run id; temp files carry that run id, and a commit removes only its own run's
temps and stale ones. This module owns every byte written into a tar: ``--retry-failed``
extends a shard through :meth:`VersionWriter.extend_shard` (a new tar object under a new
name, switched to by the manifest commit), never by writing tar headers itself.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import config_hash
from curation.errors import DatasetError
from curation.io import format as fmt
from curation.io.dataset import Dataset
from curation.io.format import now_iso
from curation.io.fs import (
    PreconditionFailed,
    atomic_put_file,
    atomic_write_bytes,
    clean_temps,
    create_exclusive,
    get_fs,
    join,
    local_staging_file,
    local_temp_file,
)
from curation.io.lease import LEASE, LeaseHold, acquire, current_run_id, lease_ttl, read_holder, verify_holder
from curation.secrets import redact

_STATE = "_writing.json"  # in a dataset root: who is writing it (stage + config hash)


def _size(fs, path: str) -> int:
    """Size in bytes of a written file (fsspec's ``size`` is None when the store reports none)."""
    n = fs.size(path)
    if n is None:
        raise DatasetError(f"{path}: the filesystem reports no size")
    return int(n)


def write_parquet(fs, path: str, table: pa.Table, *, run_id: str | None = None) -> None:
    """Write a Parquet file atomically (temp files named with ``run_id``)."""
    with local_staging_file(fs, path, ".parquet", run_id=run_id) as local:
        pq.write_table(table, local, compression="zstd")


class _TarBuilder:
    """A tar being written to a local temp file: deterministic headers, member data offsets.

    ``prefix``: ``(fs, path, end)`` copies the first ``end`` bytes of a committed tar (its
    members, without the end-of-archive blocks) so new members extend it; every member
    already there keeps its bytes and offset.
    """

    def __init__(self, run_id: str | None, prefix: tuple[Any, str, int] | None = None):
        fd, self.local = local_temp_file(None, None, ".tar", run_id)
        self._file = os.fdopen(fd, "w+b")
        try:
            if prefix is not None:
                pfs, ppath, end = prefix
                with pfs.open(ppath, "rb") as src:
                    remaining = end
                    while remaining:
                        chunk = src.read(min(remaining, 1 << 20))
                        if not chunk:
                            raise DatasetError(f"{ppath}: shorter than its members ({end} bytes): truncated tar?")
                        self._file.write(chunk)
                        remaining -= len(chunk)
            # TarFile in "w" mode starts at the file's current position: offsets are absolute
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        except BaseException:
            self.abort()
            raise

    def add_member(self, name: str, data: bytes) -> int:
        """Append one member; return the offset of its data."""
        fmt.validate_member_name(name)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        # the data ends the member, padded to a whole 512-byte block: its start is derived
        # instead of serialising the header a second time just to measure it
        return self._tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE

    def add_sample(self, row: dict[str, Any], image: bytes, image_ext: str) -> None:
        """Write ``<key>.<ext>``, ``<key>.txt``, ``<key>.json``; fill the row's tar columns."""
        key = row["key"]
        if image_ext not in fmt.IMAGE_EXTS:
            raise DatasetError(f"unsupported image extension {image_ext!r} for key {key!r}")
        row["tar_offset"] = self.add_member(f"{key}.{image_ext}", image)
        row["tar_size"] = len(image)
        row["image_ext"] = image_ext
        caption = row.get("caption")
        self.add_member(f"{key}.txt", ("" if caption is None else str(caption)).encode("utf-8"))
        self.add_member(f"{key}.json", json.dumps(row, sort_keys=True, default=str).encode("utf-8"))

    def finish(self) -> int:
        """Close the archive (end blocks), fsync; return its size in bytes."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return os.path.getsize(self.local)

    def abort(self) -> None:
        try:
            if hasattr(self, "_tar"):
                self._tar.close()
            self._file.close()
        finally:
            if os.path.exists(self.local):
                os.unlink(self.local)


def members_end(fs, path: str) -> int:
    """Byte offset where a committed tar's last member (data padded to a block) ends."""
    end = 0
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
        for m in tf:
            end = m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return end


# ---------------------------------------------------------------------------------------
class ShardWriter:
    """Streams samples of one shard into ``shards/NNNNNN.tar`` and its metadata Parquet.

    Use as a context manager (from :meth:`DatasetWriter.shard`): on a clean exit both
    files are committed; on an exception neither appears. Several processes or Ray tasks
    may each hold a ``DatasetWriter`` for the same output and write different shards;
    leftover temps are only removed at :meth:`DatasetWriter.commit`.
    """

    def __init__(self, writer: "DatasetWriter", shard_id: int):
        self.writer = writer
        self.shard_id = shard_id
        self.rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._builder = _TarBuilder(writer.run_id)
        self.num_images = 0

    def add(self, row: dict[str, Any], image: bytes | None = None, image_ext: str = "jpg") -> dict[str, Any]:
        """Add one sample. ``row`` holds its metadata columns; ``image`` None records a
        failed sample (metadata row only, no tar member).

        Fills ``key`` (when absent), ``shard``, ``tar_offset``, ``tar_size`` and
        ``image_ext``; writes ``<key>.<ext>``, ``<key>.txt`` and ``<key>.json``.
        Returns the completed row.
        """
        row = dict(row)
        key = row.get("key") or f"{self.shard_id:06d}{len(self.rows):06d}"
        fmt.validate_key(key)
        if key in self._keys:
            raise DatasetError(f"duplicate sample key {key!r} in shard {self.shard_id}")
        self._keys.add(key)
        row["key"] = key
        row["shard"] = self.shard_id
        if image is not None:
            self._builder.add_sample(row, image, image_ext)
            self.num_images += 1
        else:
            row["tar_offset"] = None
            row["tar_size"] = None
            row.setdefault("image_ext", None)
        for col in fmt.required_columns():
            row.setdefault(col, None)
        self.rows.append(row)
        return row

    def _table(self) -> pa.Table:
        types = fmt.column_types()
        names: list[str] = []
        for r in self.rows:
            for k in r:
                if k not in names:
                    names.append(k)
        for c in fmt.required_columns():
            if c not in names:
                names.append(c)
        arrays = []
        for n in names:
            vals = [r.get(n) for r in self.rows]
            arrays.append(pa.array(vals, type=types.get(n)) if n in types else pa.array(vals))
        return fmt.conform_table(pa.Table.from_arrays(arrays, names=names),
                                 f"meta of shard {self.shard_id}")

    def commit(self) -> dict[str, Any]:
        """Move the tar, then the metadata, into place. Returns the manifest's shard entry.

        Refused (nothing committed) when the writer's run no longer holds the output's lease.
        """
        try:
            table = self._table()
            tar_bytes = self._builder.finish()
            w = self.writer
            w.check_lease()
            atomic_put_file(w.fs, self._builder.local, join(w.root, fmt.shard_tar(self.shard_id)), run_id=w.run_id)
            write_parquet(w.fs, join(w.root, fmt.meta_file(w.version, self.shard_id)), table, run_id=w.run_id)
        finally:
            self._builder.abort()
        return {"id": self.shard_id, "tar": fmt.shard_tar(self.shard_id), "tar_bytes": tar_bytes,
                "num_samples": len(self.rows), "num_images": self.num_images}

    def abort(self) -> None:
        self._builder.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------
class DatasetWriter:
    """Writes a new dataset (shards + metadata version 1), resumable shard by shard.

    Args:
        url: output root.
        stage: name recorded in the history (``download``, ``reshard``, ...).
        config: the producing config; its hash guards resume. A rerun with a different
            config over a partly written output raises DatasetError instead of mixing
            two runs' shards (pass ``overwrite=True`` to start afresh).
        run_id: this run's id (default: the process's, see :func:`curation.io.lease.current_run_id`).
        break_lease: take over a lease whose heartbeat is stale (default: ``CURATION_BREAK_LEASE``).

    Raises:
        LeaseError: another run is writing this output (the message names it).
    """

    def __init__(self, url: str, *, stage: str, config: dict[str, Any] | None = None,
                 storage_options: dict | None = None, overwrite: bool = False,
                 run_id: str | None = None, break_lease: bool | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = get_fs(self.url, self.storage_options)
        self.stage = stage
        self.config = dict(config or {})
        self.config_hash = config_hash(self.config)
        self.version = 1
        self._lease: LeaseHold | None = acquire(self.fs, self.root, self.url, self, run_id=run_id,
                                                 break_lease=break_lease, purpose=f"a {stage} dataset")
        self.run_id = self._lease.run_id
        self._verify = False
        if overwrite and self.fs.exists(self.root):
            for p in self.fs.ls(self.root, detail=False):
                if p.rstrip("/").rsplit("/", 1)[-1] != LEASE:
                    self.fs.rm(p, recursive=True)
            self.fs.invalidate_cache(self.root)
        self._claim()

    def check_lease(self) -> None:
        """Raise LeaseError if this writer's run no longer holds the output's lease."""
        if self._lease is not None:
            self._lease.check()
        elif self._verify:
            verify_holder(self.fs, self.root, self.url, self.run_id)

    def release(self) -> None:
        """Give the writer lease up without committing (it is also released when this object is collected)."""
        if self._lease is not None:
            self._lease.release()

    def _claim(self) -> None:
        state_path = join(self.root, _STATE)
        mine = {"stage": self.stage, "config_hash": self.config_hash}
        if self.fs.exists(state_path):
            other = json.loads(self.fs.cat_file(state_path))
            if other.get("config_hash") != self.config_hash or other.get("stage") != self.stage:
                raise DatasetError(
                    f"{self.url}: already holds output of a different {other.get('stage')} run "
                    f"(config {other.get('config_hash')}, this run {self.config_hash}); "
                    "use another output or overwrite it")
        elif self.fs.exists(join(self.root, fmt.MANIFEST)) or self.fs.exists(join(self.root, "shards")):
            raise DatasetError(f"{self.url}: already exists and was not written by this run; "
                               "use another output or overwrite it")
        else:
            self.fs.makedirs(self.root, exist_ok=True)
            atomic_write_bytes(self.fs, state_path, json.dumps(mine).encode(), run_id=self.run_id)

    @classmethod
    def attach(cls, url: str, storage_options: dict | None = None, version: int = 1,
               run_id: str | None = None) -> "DatasetWriter":
        """A writer for a Ray task that writes shards into an output its driver already claimed
        (no claim check, no state file: only what :meth:`shard` and :meth:`is_committed` need).

        It writes under the lease holder's run id: ``run_id`` (the driver's ``writer.run_id``;
        then every shard commit first checks that this run still holds the lease), or, when
        not given, the run id the lease file names.
        """
        w = cls.__new__(cls)
        w.url = url.rstrip("/")
        w.storage_options = dict(storage_options or {})
        w.fs, w.root = get_fs(w.url, w.storage_options)
        w.version = version
        w._lease, w._verify = None, run_id is not None
        w.run_id = run_id or _holder_run_id(w.fs, w.root)
        return w

    @property
    def is_complete(self) -> bool:
        """True when a manifest was already committed by this same run config."""
        return self.fs.exists(join(self.root, fmt.MANIFEST))

    def is_committed(self, shard_id: int) -> bool:
        return self.fs.exists(join(self.root, fmt.meta_file(self.version, shard_id)))

    def shard(self, shard_id: int) -> ShardWriter:
        return ShardWriter(self, shard_id)

    def commit(self, shard_ids: list[int], *, stats: dict | None = None,
               extra: dict | None = None) -> Dataset:
        """Write the manifest listing exactly ``shard_ids`` (all must be committed)."""
        entries = []
        columns: list[str] = []
        total = 0
        for sid in sorted(shard_ids):
            rows, num_images, names = _shard_summary(self.fs, join(self.root, fmt.meta_file(self.version, sid)),
                                                     join(self.url, fmt.meta_file(self.version, sid)), sid)
            tar_path = join(self.root, fmt.shard_tar(sid))
            entries.append({"id": sid, "tar": fmt.shard_tar(sid), "tar_bytes": _size(self.fs, tar_path),
                            "num_samples": rows, "num_images": num_images})
            total += rows
            columns += [n for n in names if n not in columns]
        manifest = {
            "format": "curation-dataset", "format_version": 1, "created_at": now_iso(),
            "version": self.version, "num_samples": total, "columns": columns or fmt.required_columns(),
            "shards": entries,
            "history": [{"version": self.version, "parent": None, "stage": self.stage,
                         "config_hash": self.config_hash, "created_at": now_iso(),
                         "config": redact(self.config), "stats": stats or {}}],
            "embeddings": None,
        }
        if extra:
            manifest["extra"] = extra
        self.check_lease()
        write_manifest(self.fs, self.root, manifest, self.url, run_id=self.run_id)
        # every writer of this run has finished: its temps are leftovers; other runs' only when stale
        for d in ("", "shards", f"meta/v{self.version}"):
            clean_temps(self.fs, join(self.root, d) if d else self.root, run_id=self.run_id,
                        stale_after=lease_ttl())
        self.release()
        return Dataset(self.url, self.storage_options)


def _shard_summary(fs, meta_path: str, where: str, sid: int) -> tuple[int, int, list[str]]:
    """(rows, rows with an image, column names) of a committed shard's metadata, in one read."""
    try:
        with fs.open(meta_path, "rb") as f:
            pf = pq.ParquetFile(f)
            offsets = pf.read(columns=["tar_offset"]).column("tar_offset")
            return pf.metadata.num_rows, len(offsets) - offsets.null_count, pf.schema_arrow.names
    except FileNotFoundError:
        raise DatasetError(f"{where}: shard {sid} was never committed") from None


def write_manifest(fs, root: str, manifest: dict[str, Any], url: str, *, run_id: str | None = None) -> None:
    """Validate and atomically write ``manifest.json`` (always the last write of a commit)."""
    fmt.validate_manifest_dict(manifest, join(url, fmt.MANIFEST))
    atomic_write_bytes(fs, join(root, fmt.MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode(),
                       run_id=run_id)


def _holder_run_id(fs, root: str) -> str:
    rec = read_holder(fs, root)
    return str(rec["run_id"]) if rec and rec.get("run_id") else current_run_id()


# ---------------------------------------------------------------------------------------
class VersionWriter:
    """Writes metadata version N+1 (and optionally embeddings) of an existing dataset.

    Stages that only compute (score, dedup, caption, filter) use this; they never touch
    tars. Resumable: an uncommitted version directory whose ``_stage.json`` names the
    same parent version, stage and config hash is continued, and :meth:`is_committed`
    tells which shards are already done. A different config gets a fresh version number,
    so files of a committed version are never overwritten.

    The writer holds the dataset's writer lease (one writer per output) until
    :meth:`commit`, and claims its version number by creating ``meta/v<N>/_stage.json``
    exclusively, so two writers never pick the same number.

    Raises:
        LeaseError: another run is writing this dataset (the message names it).
    """

    def __init__(self, ds: Dataset, stage: str, config: dict[str, Any], *, run_id: str | None = None,
                 break_lease: bool | None = None):
        self.ds = ds
        self.fs, self.root = ds.fs, ds.root
        self.stage = stage
        self.config = dict(config)
        self.config_hash = config_hash(self.config)
        self.parent = ds.version
        self._lease: LeaseHold | None = acquire(self.fs, self.root, ds.url, self, run_id=run_id,
                                                 break_lease=break_lease, purpose=f"a {stage} version")
        self.run_id = self._lease.run_id
        self._verify = False
        self.version = self._pick_version()
        self.embeddings: dict[str, Any] | None = None

    def _pick_version(self) -> int:
        meta_root = join(self.root, "meta")
        taken = set(self.ds.history_versions())
        existing = []
        if self.fs.exists(meta_root):
            for p in self.fs.ls(meta_root, detail=False):
                b = p.rstrip("/").rsplit("/", 1)[-1]
                if b.startswith("v") and b[1:].isdigit():
                    existing.append(int(b[1:]))
        me = {"parent": self.parent, "stage": self.stage, "config_hash": self.config_hash}
        for v in sorted(existing):
            if v in taken:
                continue
            state = join(meta_root, f"v{v}", "_stage.json")
            try:
                if json.loads(self.fs.cat_file(state)) == me:
                    return v
            except (FileNotFoundError, json.JSONDecodeError):
                continue
        v = max([*existing, *taken, 0]) + 1
        while True:  # the number is ours once its _stage.json is created exclusively
            try:
                create_exclusive(self.fs, join(meta_root, f"v{v}", "_stage.json"), json.dumps(me).encode())
                return v
            except PreconditionFailed:
                v += 1

    @classmethod
    def attach(cls, ds: Dataset, version: int, run_id: str | None = None) -> "VersionWriter":
        """A writer for a version number already chosen (by the driver) on top of ``ds``.

        It writes under the lease holder's run id: ``run_id`` (the driver's ``vw.run_id``;
        then every commit first checks that this run still holds the lease), or, when not
        given, the run id the lease file names.
        """
        vw = cls.__new__(cls)
        vw.ds, vw.fs, vw.root, vw.parent, vw.version, vw.embeddings = ds, ds.fs, ds.root, ds.version, version, None
        vw.stage, vw.config, vw.config_hash = "", {}, ""
        vw._lease, vw._verify = None, run_id is not None
        vw.run_id = run_id or _holder_run_id(ds.fs, ds.root)
        return vw

    def check_lease(self) -> None:
        """Raise LeaseError if this writer's run no longer holds the dataset's lease."""
        if self._lease is not None:
            self._lease.check()
        elif self._verify:
            verify_holder(self.fs, self.root, self.ds.url, self.run_id)

    def release(self) -> None:
        """Give the writer lease up without committing (also done when this object is collected)."""
        if self._lease is not None:
            self._lease.release()

    def is_committed(self, shard_id: int) -> bool:
        return self.fs.exists(join(self.root, fmt.meta_file(self.version, shard_id)))

    def pending_shards(self) -> list[int]:
        return [s for s in self.ds.shard_ids if not self.is_committed(s)]

    def write_meta(self, shard_id: int, table: pa.Table) -> None:
        """Commit shard ``shard_id``'s full metadata table (old columns plus new ones).

        The table must hold exactly the parent's uids in the parent's order.
        """
        where = self.ds.full_url(fmt.meta_file(self.version, shard_id))
        table = fmt.conform_table(table, where)
        parent_uids = self.ds.read_meta(shard_id, columns=["uid"]).column("uid").to_pylist()
        if table.column("uid").to_pylist() != parent_uids:
            raise DatasetError(f"{where}: rows do not match the parent version's uids "
                               "(a stage must keep every row in order)")
        self.check_lease()
        write_parquet(self.fs, join(self.root, fmt.meta_file(self.version, shard_id)), table, run_id=self.run_id)

    def extend_shard(self, shard_id: int, rows: list[dict[str, Any]], images: dict[int, tuple[bytes, str]],
                     schema: pa.Schema | None = None) -> dict[str, Any]:
        """Commit shard ``shard_id`` of this version with new images appended to its tar.

        The parent's tar is immutable: a new tar object ``shards/NNNNNN.v<version>.tar`` is
        written holding the parent tar's members (same bytes, same offsets, so every older
        metadata version still addresses valid bytes) followed by one sample per entry of
        ``images`` (row index -> ``(image bytes, ext)``; those rows must have no member yet).
        Then the version's metadata (``rows``, their tar columns filled) is committed. The
        manifest switches to the new tar only in :meth:`commit`, so a kill at any step
        leaves readers the old state or the new one. Deterministic: a rerun rewrites the
        same name with the same bytes.

        Returns ``{"shard", "tar", "tar_bytes", "num_images"}``.
        """
        rows = [dict(r) for r in rows]
        parent_tar = self.ds.tar_path(shard_id)
        new_name = fmt.shard_tar(shard_id, self.version)
        builder = _TarBuilder(self.run_id, (self.fs, parent_tar, members_end(self.fs, parent_tar)))
        try:
            for i in sorted(images):
                if rows[i].get("tar_offset") is not None:
                    raise DatasetError(f"{self.ds.url}: shard {shard_id} row {i} ({rows[i].get('key')!r}) "
                                       "already has a tar member")
                image, ext = images[i]
                builder.add_sample(rows[i], image, ext)
            tar_bytes = builder.finish()
            table = pa.Table.from_pylist(rows, schema=schema) if schema is not None else pa.Table.from_pylist(rows)
            self.check_lease()
            atomic_put_file(self.fs, builder.local, join(self.root, new_name), run_id=self.run_id)
        finally:
            builder.abort()
        self.write_meta(shard_id, table)
        return {"shard": shard_id, "tar": new_name, "tar_bytes": tar_bytes,
                "num_images": sum(1 for r in rows if r.get("tar_offset") is not None)}

    def write_embeddings(self, shard_id: int, table: pa.Table, *, model: str) -> None:
        """Commit embeddings for one shard: ``uid`` plus ``image_emb``/``text_emb`` fixed-size lists."""
        dim = table.schema.field("image_emb").type.list_size
        self.embeddings = {"version": self.version, "dim": int(dim), "model": model}
        self.check_lease()
        write_parquet(self.fs, join(self.root, fmt.emb_file(self.version, shard_id)), table, run_id=self.run_id)

    def commit(self, *, stats: dict | None = None, embeddings: dict | None = None,
               extended: list[int] | None = None) -> Dataset:
        """Write the new manifest (current version = this one). All shards must be committed.

        ``extended``: shards written with :meth:`extend_shard`; the manifest lists their new
        tars (and sizes, image counts), and the tars they replace are deleted after it.
        """
        pending = self.pending_shards()
        if pending:
            raise DatasetError(f"{self.ds.url}: version {self.version} is missing shards {pending[:10]}")
        columns: list[str] = []
        for sid in self.ds.shard_ids[:1]:
            with self.fs.open(join(self.root, fmt.meta_file(self.version, sid)), "rb") as f:
                columns = pq.read_schema(f).names
        m = json.loads(json.dumps(self.ds.manifest))
        replaced = []
        for entry in m["shards"]:
            if entry["id"] in set(extended or ()):
                name = fmt.shard_tar(entry["id"], self.version)
                path = join(self.root, name)
                if not self.fs.exists(path):
                    raise DatasetError(f"{self.ds.full_url(name)}: extended shard {entry['id']} has no new tar")
                offsets = self.ds.read_meta(entry["id"], columns=["tar_offset"], version=self.version)
                offsets = offsets.column("tar_offset")
                if entry["tar"] != name:
                    replaced.append(entry["tar"])
                entry.update(tar=name, tar_bytes=_size(self.fs, path),
                             num_images=len(offsets) - offsets.null_count)
        m["version"] = self.version
        m["columns"] = columns or m["columns"]
        m["created_at"] = now_iso()
        chain = [h for h in m["history"] if h["version"] in _chain(m["history"], self.parent)]
        chain.append({"version": self.version, "parent": self.parent, "stage": self.stage,
                      "config_hash": self.config_hash, "created_at": now_iso(), "config": redact(self.config),
                      "stats": stats or {}})
        m["history"] = chain
        emb = embeddings or self.embeddings
        if emb is None and self.fs.exists(join(self.root, f"emb/v{self.version}")):
            first = join(self.root, fmt.emb_file(self.version, self.ds.shard_ids[0]))
            with self.fs.open(first, "rb") as f:
                sch = pq.read_schema(f)
            emb = {"version": self.version, "dim": int(sch.field("image_emb").type.list_size),
                   "model": (sch.metadata or {}).get(b"model", b"").decode() or self.stage}
        if emb is not None:
            m["embeddings"] = emb
        elif m.get("embeddings") and m["embeddings"]["version"] not in [h["version"] for h in chain]:
            m["embeddings"] = None
        self.check_lease()
        write_manifest(self.fs, self.root, m, self.ds.url, run_id=self.run_id)
        for name in replaced:  # no longer listed: the new tars hold every byte they held
            try:
                self.fs.rm_file(join(self.root, name))
            except FileNotFoundError:
                pass
        for d in ("", "shards", f"meta/v{self.version}", f"emb/v{self.version}"):
            clean_temps(self.fs, join(self.root, d) if d else self.root, run_id=self.run_id,
                        stale_after=lease_ttl())
        self.release()
        return Dataset(self.ds.url, self.ds.storage_options)


def remove_unlisted_tars(ds: Dataset) -> list[str]:
    """Delete tars of ``ds`` that its manifest no longer lists and no unfinished version can use.

    Those are superseded tars (``NNNNNN.tar`` or ``NNNNNN.v<K>.tar`` with ``K`` at most the
    current version) that a kill between a manifest commit and their deletion left. Tars of
    versions above the current one belong to an unfinished writer and are kept. Call while
    holding the dataset's lease. Returns the names removed.
    """
    listed = {s["tar"] for s in ds.shards}
    shards_dir = join(ds.root, "shards")
    if not ds.fs.exists(shards_dir):
        return []
    removed = []
    top = max(ds.history_versions() + [ds.version])
    for p in ds.fs.ls(shards_dir, detail=False):
        name = "shards/" + p.rstrip("/").rsplit("/", 1)[-1]
        parsed = fmt.parse_shard_tar(name)
        if parsed is None or name in listed or (parsed[1] or 0) > top:
            continue
        try:
            ds.fs.rm_file(join(ds.root, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def _chain(history: list[dict], version: int) -> set[int]:
    """Versions on the path from the root of the history to ``version``."""
    by_v = {h["version"]: h for h in history}
    out = set()
    v: int | None = version
    while v is not None and v in by_v:
        out.add(v)
        v = by_v[v]["parent"]
    return out
