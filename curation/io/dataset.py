"""Reading a committed dataset: manifest, metadata versions, embeddings, tar members.

Guarantee: a :class:`Dataset` only ever reads what ``manifest.json`` lists, so files that
a running or killed writer left behind (new shards, uncommitted versions, temps) are
invisible to it. Errors name the file that is missing or malformed.
"""
from __future__ import annotations

import json
import tarfile
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import DatasetError
from curation.io import format as fmt
from curation.io.fs import get_fs, join, read_bytes


class Dataset:
    """A committed dataset at a local path or fsspec URL.

    Args:
        url: dataset root (``/data/ds``, ``s3://bucket/ds``).
        storage_options: fsspec options (e.g. ``{"endpoint_url": ...}`` for S3).
        version: open an earlier metadata version listed in the manifest's history.
    """

    def __init__(self, url: str, storage_options: dict | None = None, version: int | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = get_fs(self.url, self.storage_options)
        self.manifest = self._load_manifest()
        self._version = version
        if version is not None and version not in self.history_versions():
            raise DatasetError(f"{self.manifest_url}: version {version} is not in this dataset's history "
                               f"(has {self.history_versions()})")

    # -- manifest -------------------------------------------------------------------
    @property
    def manifest_url(self) -> str:
        return join(self.url, fmt.MANIFEST)

    def _load_manifest(self) -> dict[str, Any]:
        path = join(self.root, fmt.MANIFEST)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            raise DatasetError(f"{self.manifest_url}: no manifest (not a dataset, "
                               "or its writer never committed)") from None
        except IsADirectoryError:
            raise DatasetError(f"{self.manifest_url}: is a directory, expected a JSON file") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{self.manifest_url}: malformed JSON ({e})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{self.manifest_url}: malformed manifest (top level is not an object)")
        fmt.validate_manifest_dict(data, self.manifest_url)
        return data

    @property
    def version(self) -> int:
        """The metadata version this object reads (the manifest's current one by default)."""
        return self._version if self._version is not None else int(self.manifest["version"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.manifest["history"])

    def history_versions(self) -> list[int]:
        return [h["version"] for h in self.manifest["history"]]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.manifest["shards"])

    @property
    def shard_ids(self) -> list[int]:
        return [s["id"] for s in self.manifest["shards"]]

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def columns(self) -> list[str]:
        if self._version is None or self._version == self.manifest["version"]:
            return list(self.manifest["columns"])
        if not self.shard_ids:
            return []
        with self.fs.open(self._meta_path(self.shard_ids[0]), "rb") as f:
            return pq.read_schema(f).names

    @property
    def embeddings(self) -> dict[str, Any] | None:
        """``{"version", "dim", "model"}`` of the stored embeddings, or None."""
        return self.manifest.get("embeddings")

    def shard_info(self, shard_id: int) -> dict[str, Any]:
        for s in self.manifest["shards"]:
            if s["id"] == shard_id:
                return s
        raise DatasetError(f"{self.manifest_url}: no shard {shard_id}")

    # -- paths ----------------------------------------------------------------------
    def _meta_path(self, shard_id: int, version: int | None = None) -> str:
        return join(self.root, fmt.meta_file(version or self.version, shard_id))

    def full_url(self, rel: str) -> str:
        """URL of a file inside the dataset (for DuckDB, logs, error messages)."""
        return join(self.url, rel)

    def meta_urls(self, version: int | None = None) -> list[str]:
        return [self.full_url(fmt.meta_file(version or self.version, i)) for i in self.shard_ids]

    def tar_path(self, shard_id: int) -> str:
        """Path of the tar the manifest lists for ``shard_id`` (``--retry-failed`` switches it)."""
        tars = self.__dict__.get("_tars")
        if tars is None:
            tars = self.__dict__["_tars"] = {s["id"]: s["tar"] for s in self.manifest["shards"]}
        return join(self.root, tars.get(shard_id) or fmt.shard_tar(shard_id))

    # -- metadata -------------------------------------------------------------------
    def read_meta(self, shard_id: int | None = None, *, columns: list[str] | None = None,
                  version: int | None = None) -> pa.Table:
        """Metadata of one shard, or of all shards concatenated in shard order."""
        ids = self.shard_ids if shard_id is None else [shard_id]
        tables = [self._read_parquet(self._meta_path(i, version), columns) for i in ids]
        if not tables:
            return pa.table({c: pa.array([], type=fmt.column_types().get(c, pa.string()))
                             for c in (columns or fmt.required_columns())})
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]

    def read_embeddings(self, shard_id: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Embeddings (``uid``, ``image_emb``, ``text_emb``) aligned row-for-row with the shard's metadata."""
        emb = self.embeddings
        if not emb:
            raise DatasetError(f"{self.url}: has no embeddings (run `curate score` first)")
        ids = self.shard_ids if shard_id is None else [shard_id]
        tables = [self._read_parquet(join(self.root, fmt.emb_file(emb["version"], i)), columns) for i in ids]
        return pa.concat_tables(tables) if len(tables) != 1 else tables[0]

    def embedding_urls(self) -> list[str]:
        emb = self.embeddings
        return [self.full_url(fmt.emb_file(emb["version"], i)) for i in self.shard_ids] if emb else []

    def _read_parquet(self, path: str, columns: list[str] | None) -> pa.Table:
        """One Parquet file; requested ``columns`` a shard lacks (e.g. every row of it failed
        before a column was ever set) come back as nulls, as a whole-table read promotes them."""
        try:
            with self.fs.open(path, "rb") as f:
                if columns is None:
                    return pq.read_table(f)
                pf = pq.ParquetFile(f)
                names = set(pf.schema_arrow.names)
                t = pf.read(columns=[c for c in columns if c in names])
                types = fmt.column_types()
                for c in columns:
                    if c not in names:
                        t = t.append_column(c, pa.nulls(t.num_rows, type=types.get(c, pa.null())))
                return t.select(columns)
        except FileNotFoundError:
            raise DatasetError(f"{path}: listed by the manifest but missing") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(f"{path}: unreadable Parquet ({e})") from None
        except KeyError as e:
            raise DatasetError(f"{path}: no column {e}") from None

    # -- tar members ----------------------------------------------------------------
    def read_range(self, shard_id: int, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset+size)`` of a shard's tar (random access to one member)."""
        data = read_bytes(self.fs, self.tar_path(shard_id), offset, offset + size)
        if len(data) != size:
            raise DatasetError(f"{self.full_url(fmt.shard_tar(shard_id))}: short read at {offset} "
                               f"({len(data)} of {size} bytes): truncated tar?")
        return data

    def read_image(self, row: dict[str, Any]) -> bytes:
        """The image bytes of one metadata row, by its ``tar_offset``/``tar_size``."""
        if row.get("tar_offset") is None:
            raise DatasetError(f"sample {row.get('uid')} has no image (status {row.get('status')!r})")
        return self.read_range(int(row["shard"]), int(row["tar_offset"]), int(row["tar_size"]))

    def read_images(self, rows: Iterable[dict[str, Any]]) -> list[bytes]:
        """Several images at once (ranges of the same shard are fetched together)."""
        rows = list(rows)
        if not rows:
            return []
        paths = [self.tar_path(int(r["shard"])) for r in rows]
        starts = [int(r["tar_offset"]) for r in rows]
        ends = [s + int(r["tar_size"]) for s, r in zip(starts, rows)]
        return list(self.fs.cat_ranges(paths, starts, ends))

    def iter_tar(self, shard_id: int) -> Iterator[dict[str, Any]]:
        """Read a shard's tar sequentially, yielding ``{"key", "<ext>": bytes, ...}`` groups.

        Member names are validated; a truncated or corrupt tar raises DatasetError naming it.
        """
        where = self.full_url(fmt.shard_tar(shard_id))
        with self.fs.open(self.tar_path(shard_id), "rb") as f:
            yield from iter_tar_groups(f, where)

    def iter_samples(self, shard_ids: Iterable[int] | None = None,
                     columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every sample with an image: its metadata row plus ``image`` bytes and ``image_ext``.

        Reads each shard sequentially (one pass over the tar).
        """
        for sid in (self.shard_ids if shard_ids is None else shard_ids):
            meta = self.read_meta(sid, columns=columns)
            by_key = {r["key"]: r for r in meta.to_pylist()}
            for group in self.iter_tar(sid):
                row = by_key.get(group["key"])
                if row is None:
                    raise DatasetError(f"{self.full_url(fmt.shard_tar(sid))}: member {group['key']!r} "
                                       "has no metadata row")
                ext = next((e for e in fmt.IMAGE_EXTS if e in group), None)
                if ext is None:
                    continue
                yield {**row, "image": group[ext], "image_ext": ext}

    def __repr__(self) -> str:
        return (f"Dataset({self.url!r}, version={self.version}, shards={len(self.shard_ids)}, "
                f"samples={self.num_samples})")


def iter_tar_groups(fileobj, where: str) -> Iterator[dict[str, Any]]:
    """Group consecutive tar members by key: ``{"key": k, "jpg": b"...", "txt": b"..."}``."""
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for member in tf:
                if not member.isfile():
                    raise DatasetError(f"{where}: member {member.name!r} is not a regular file")
                key, ext = fmt.validate_member_name(member.name, where)
                f = tf.extractfile(member)
                assert f is not None  # isfile() above: a regular member always extracts
                data = f.read()
                if len(data) != member.size:
                    raise DatasetError(f"{where}: member {member.name!r} is truncated")
                if current is not None and current["key"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"key": key}
                current[ext] = data
    except tarfile.ReadError as e:
        raise DatasetError(f"{where}: corrupt or truncated tar ({e})") from None
    except EOFError:
        raise DatasetError(f"{where}: truncated tar (unexpected end of data)") from None
    if current is not None:
        yield current


__all__ = ["Dataset", "iter_tar_groups"]
