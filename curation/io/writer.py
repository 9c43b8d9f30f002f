"""Writing datasets: shards + metadata, new metadata versions, and the manifest.

Commit protocol (DESIGN.md section 3): every file is written under a hidden temporary
name and moved into place atomically (one PUT on object stores); a shard counts as
committed once its metadata Parquet exists (the tar is moved first); the manifest is
written last. A killed writer therefore leaves nothing a reader sees, and a rerun skips
committed shards and overwrites the rest. Tar bytes are deterministic (fixed mtime,
owner and order) so a rerun produces identical shards.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import tarfile
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import config_hash
from curation.errors import DatasetError
from curation.io import format as fmt
from curation.io.dataset import Dataset
from curation.io.fs import (atomic_put_file, atomic_write_bytes, clean_temps, get_fs, join,
                            local_staging_file)

_STATE = "_writing.json"  # in a dataset root: who is writing it (stage + config hash)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_parquet(fs, path: str, table: pa.Table) -> None:
    """Write a Parquet file atomically."""
    with local_staging_file(fs, path, ".parquet") as local:
        pq.write_table(table, local, compression="zstd")


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
        fd, self._tar_local = tempfile.mkstemp(prefix=".curation-shard-", suffix=".tar.tmp")
        self._file = os.fdopen(fd, "w+b")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self.num_images = 0

    def _add_member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))
        # the data ends the member, padded to a whole 512-byte block: its start is derived
        # instead of serialising the header a second time just to measure it
        return self._tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE

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
            if image_ext not in fmt.IMAGE_EXTS:
                raise DatasetError(f"unsupported image extension {image_ext!r} for key {key!r}")
            fmt.validate_member_name(f"{key}.{image_ext}")
            row["tar_offset"] = self._add_member(f"{key}.{image_ext}", image)
            row["tar_size"] = len(image)
            row["image_ext"] = image_ext
            caption = row.get("caption")
            self._add_member(f"{key}.txt", ("" if caption is None else str(caption)).encode("utf-8"))
            self._add_member(f"{key}.json", json.dumps(row, sort_keys=True, default=str).encode("utf-8"))
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
        """Move the tar, then the metadata, into place. Returns the manifest's shard entry."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        tar_bytes = os.path.getsize(self._tar_local)
        w = self.writer
        table = self._table()
        atomic_put_file(w.fs, self._tar_local, join(w.root, fmt.shard_tar(self.shard_id)))
        write_parquet(w.fs, join(w.root, fmt.meta_file(w.version, self.shard_id)), table)
        return {"id": self.shard_id, "tar": fmt.shard_tar(self.shard_id), "tar_bytes": tar_bytes,
                "num_samples": len(self.rows), "num_images": self.num_images}

    def abort(self) -> None:
        try:
            self._tar.close()
            self._file.close()
        finally:
            if os.path.exists(self._tar_local):
                os.unlink(self._tar_local)

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
    """

    def __init__(self, url: str, *, stage: str, config: dict[str, Any] | None = None,
                 storage_options: dict | None = None, overwrite: bool = False):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = get_fs(self.url, self.storage_options)
        self.stage = stage
        self.config = dict(config or {})
        self.config_hash = config_hash(self.config)
        self.version = 1
        if overwrite and self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self._claim()

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
            atomic_write_bytes(self.fs, state_path, json.dumps(mine).encode())

    @classmethod
    def attach(cls, url: str, storage_options: dict | None = None, version: int = 1) -> "DatasetWriter":
        """A writer for a Ray task that writes shards into an output its driver already claimed
        (no claim check, no state file: only what :meth:`shard` and :meth:`is_committed` need)."""
        w = cls.__new__(cls)
        w.url = url.rstrip("/")
        w.storage_options = dict(storage_options or {})
        w.fs, w.root = get_fs(w.url, w.storage_options)
        w.version = version
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
            entries.append({"id": sid, "tar": fmt.shard_tar(sid), "tar_bytes": int(self.fs.size(tar_path)),
                            "num_samples": rows, "num_images": num_images})
            total += rows
            columns += [n for n in names if n not in columns]
        manifest = {
            "format": "curation-dataset", "format_version": 1, "created_at": now_iso(),
            "version": self.version, "num_samples": total, "columns": columns or fmt.required_columns(),
            "shards": entries,
            "history": [{"version": self.version, "parent": None, "stage": self.stage,
                         "config_hash": self.config_hash, "created_at": now_iso(),
                         "config": self.config, "stats": stats or {}}],
            "embeddings": None,
        }
        if extra:
            manifest["extra"] = extra
        write_manifest(self.fs, self.root, manifest, self.url)
        # only now, with every writer finished, are leftover temps certainly stale
        for d in ("shards", f"meta/v{self.version}"):
            clean_temps(self.fs, join(self.root, d))
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


def write_manifest(fs, root: str, manifest: dict[str, Any], url: str) -> None:
    """Validate and atomically write ``manifest.json`` (always the last write of a commit)."""
    fmt.validate_manifest_dict(manifest, join(url, fmt.MANIFEST))
    atomic_write_bytes(fs, join(root, fmt.MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())


# ---------------------------------------------------------------------------------------
class VersionWriter:
    """Writes metadata version N+1 (and optionally embeddings) of an existing dataset.

    Stages that only compute (score, dedup, caption, filter) use this; they never touch
    tars. Resumable: an uncommitted version directory whose ``_stage.json`` names the
    same parent version, stage and config hash is continued, and :meth:`is_committed`
    tells which shards are already done. A different config gets a fresh version number,
    so files of a committed version are never overwritten.
    """

    def __init__(self, ds: Dataset, stage: str, config: dict[str, Any]):
        self.ds = ds
        self.fs, self.root = ds.fs, ds.root
        self.stage = stage
        self.config = dict(config)
        self.config_hash = config_hash(self.config)
        self.parent = ds.version
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
        atomic_write_bytes(self.fs, join(meta_root, f"v{v}", "_stage.json"), json.dumps(me).encode())
        return v

    @classmethod
    def attach(cls, ds: Dataset, version: int) -> "VersionWriter":
        """A writer for a version number already chosen (by the driver) on top of ``ds``."""
        vw = cls.__new__(cls)
        vw.ds, vw.fs, vw.root, vw.parent, vw.version, vw.embeddings = ds, ds.fs, ds.root, ds.version, version, None
        vw.stage, vw.config, vw.config_hash = "", {}, ""
        return vw

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
            raise DatasetError(f"{where}: rows do not match the parent version's uids (a stage must keep every row in order)")
        write_parquet(self.fs, join(self.root, fmt.meta_file(self.version, shard_id)), table)

    def write_embeddings(self, shard_id: int, table: pa.Table, *, model: str) -> None:
        """Commit embeddings for one shard: ``uid`` plus ``image_emb``/``text_emb`` fixed-size lists."""
        dim = table.schema.field("image_emb").type.list_size
        self.embeddings = {"version": self.version, "dim": int(dim), "model": model}
        write_parquet(self.fs, join(self.root, fmt.emb_file(self.version, shard_id)), table)

    def commit(self, *, stats: dict | None = None, embeddings: dict | None = None) -> Dataset:
        """Write the new manifest (current version = this one). All shards must be committed."""
        pending = self.pending_shards()
        if pending:
            raise DatasetError(f"{self.ds.url}: version {self.version} is missing shards {pending[:10]}")
        columns: list[str] = []
        for sid in self.ds.shard_ids[:1]:
            with self.fs.open(join(self.root, fmt.meta_file(self.version, sid)), "rb") as f:
                columns = pq.read_schema(f).names
        m = json.loads(json.dumps(self.ds.manifest))
        m["version"] = self.version
        m["columns"] = columns or m["columns"]
        m["created_at"] = now_iso()
        chain = [h for h in m["history"] if h["version"] in _chain(m["history"], self.parent)]
        chain.append({"version": self.version, "parent": self.parent, "stage": self.stage,
                      "config_hash": self.config_hash, "created_at": now_iso(), "config": self.config,
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
        write_manifest(self.fs, self.root, m, self.ds.url)
        for d in (f"meta/v{self.version}", f"emb/v{self.version}"):
            clean_temps(self.fs, join(self.root, d))
        return Dataset(self.ds.url, self.ds.storage_options)


def _chain(history: list[dict], version: int) -> set[int]:
    """Versions on the path from the root of the history to ``version``."""
    by_v = {h["version"]: h for h in history}
    out = set()
    v: int | None = version
    while v is not None and v in by_v:
        out.add(v)
        v = by_v[v]["parent"]
    return out
