"""Re-ingesting existing WebDataset shards (local, s3://, http://) into our format.

Each input tar becomes one output shard. Samples are grouped by key (the member name up to
its first dot, webdataset's rule); only image, ``.txt`` and ``.json`` members are read -
never pickle or other executable payloads. Images go through the same checks and resizer
as downloads, and ``sha256``/``original_size`` describe the bytes found in the tar.

Input tars are untrusted (third-party shards). Guarantees:

* no member is read past its cap (``max_bytes`` for images, at most 1 MiB for ``.txt``/
  ``.json``): a larger one makes its sample ``too_large``, judged from the header;
* a symlink, hard link, device, FIFO, or a name that is absolute or contains ``..`` makes
  its sample ``unsafe_member`` (nothing of it is read or written);
* a ``.json`` member that is not a JSON object makes its sample ``bad_metadata``;
* every such sample keeps its metadata row, and the rest of the shard is ingested;
* uids (from the JSON, else derived from tar URL and key) must be unique: a duplicate
  raises :class:`InputError` naming both samples.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from typing import IO, Any, Iterator, cast

from braceexpand import braceexpand

from curation import status as st
from curation.download.config import DownloadConfig
from curation.download.inputs import InputError
from curation.download.worker import make_resizer, process_image
from curation.io.fs import get_fs

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def list_tars(pattern: str, storage_options: dict | None) -> list[str]:
    """Expand a brace pattern, a glob, or a folder into tar URLs (sorted within a folder)."""
    out: list[str] = []
    for url in braceexpand(pattern):
        fs, path = get_fs(url, storage_options)
        proto = url.split("://", 1)[0] + "://" if "://" in url else ""
        if any(c in path for c in "*?["):
            matches = cast(list[str], fs.glob(path))  # fsspec is untyped: without detail=True, glob lists paths
            out.extend(sorted(proto + p if proto else p for p in matches))
        elif not url.startswith("http") and fs.isdir(path):
            out.extend(sorted(proto + p if proto else p for p in fs.ls(path, detail=False) if p.endswith(".tar")))
        else:
            out.append(url)
    if not out:
        raise InputError(f"{pattern}: no WebDataset tars found")
    return out


def plan_wds(cfg: DownloadConfig, storage_options: dict | None) -> tuple[list[dict[str, Any]], str, dict]:
    tars = list_tars(cfg.input, storage_options)
    h = hashlib.sha256()
    for url in tars:
        fs, path = get_fs(url, storage_options)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise InputError(f"{url}: WebDataset shard not found") from None
        h.update(f"{url}\0{info.get('size')}\0{info.get('ETag') or info.get('mtime') or ''}\n".encode())
    specs = [{"shard": i, "tar": url, "storage_options": storage_options or {}} for i, url in enumerate(tars)]
    return specs, h.hexdigest()[:16], {"tars": len(tars)}


_TEXT_CAP = 1 << 20


class _Group:
    """One sample's members: ``data`` by extension, and the reasons it is rejected."""

    __slots__ = ("key", "data", "problems")

    def __init__(self, key: str):
        self.key = key
        self.data: dict[str, bytes] = {}
        self.problems: list[tuple[str, str]] = []


def _unsafe(m: tarfile.TarInfo) -> str | None:
    """Why a member may not be read (a link, a device, a path trick), or None."""
    if m.issym() or m.islnk():
        return f"member {m.name!r} is a link"
    if m.ischr() or m.isblk() or m.isfifo() or not m.isfile():
        return f"member {m.name!r} is not a regular file"
    parts = m.name.replace("\\", "/").split("/")
    if m.name.startswith(("/", "\\")) or ".." in parts or "\0" in m.name:
        return f"member name {m.name!r} is absolute or leaves the archive"
    return None


def iter_groups(url: str, storage_options: dict | None, max_bytes: int = 20 * 1024 * 1024) -> Iterator[_Group]:
    """Each sample of a tar, in tar order: only safe members under their cap are read."""
    fs, path = get_fs(url, storage_options)
    current: _Group | None = None
    try:
        raw = cast(IO[bytes], fs.open(path, "rb"))  # fsspec is untyped: mode "rb" opens a binary file
        with raw as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            for m in tf:
                if m.isdir():
                    continue
                base = posixpath.basename(m.name)
                if not base or base.startswith(".") or "." not in base:
                    continue
                stem = posixpath.join(posixpath.dirname(m.name), base.split(".", 1)[0])
                ext = base.split(".", 1)[1].lower()
                if current is not None and current.key != stem:
                    yield current
                    current = None
                if current is None:
                    current = _Group(stem)
                why = _unsafe(m)
                if why is not None:
                    current.problems.append((st.UNSAFE_MEMBER, why))
                    continue
                if ext not in _IMAGE_EXTS + ("txt", "json"):
                    continue  # never read: pickle, .pth, anything else
                cap = max_bytes if ext in _IMAGE_EXTS else min(max_bytes, _TEXT_CAP)
                if m.size > cap:
                    current.problems.append((st.TOO_LARGE, f"member {m.name!r} is {m.size} bytes, over the "
                                                           f"{cap}-byte cap"))
                    continue
                fobj = tf.extractfile(m)
                current.data[ext] = fobj.read(cap + 1) if fobj is not None else b""
    except (tarfile.ReadError, EOFError) as e:
        raise InputError(f"{url}: corrupt or truncated tar ({e})") from None
    if current is not None:
        yield current


def _metadata(g: _Group) -> tuple[dict[str, Any], str | None]:
    """The sample's JSON object, or ``({}, why)`` when the member is not one."""
    if "json" not in g.data:
        return {}, None
    try:
        meta = json.loads(g.data["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {}, f"member {g.key}.json is not valid JSON ({e.__class__.__name__})"
    if not isinstance(meta, dict):
        return {}, f"member {g.key}.json is a JSON {type(meta).__name__}, not an object"
    uid = meta.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, (str, int)) or str(uid) == ""):
        return {}, f"member {g.key}.json has a uid that is not a non-empty string or integer"
    return meta, None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def ingest_rows(spec: dict[str, Any], cfg: DownloadConfig) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Yield ``(row, image)`` for every sample of one input tar (see the module guarantees).

    Raises:
        InputError: the tar is corrupt, or two samples share a uid (names both).
    """
    resizer = make_resizer(cfg)
    seen: dict[str, str] = {}
    for g in iter_groups(spec["tar"], spec.get("storage_options"), cfg.max_bytes):
        meta, bad_meta = _metadata(g) if not g.problems else ({}, None)
        derived = hashlib.sha256(f"{spec['tar']}\0{g.key}".encode()).hexdigest()[:24]
        uid = str(meta.get("uid") or derived)
        if uid in seen:
            raise InputError(f"{spec['tar']}: duplicate uid {uid!r} (samples {seen[uid]!r} and {g.key!r}); "
                             "uids must be unique")
        seen[uid] = g.key
        caption = g.data["txt"].decode("utf-8", "replace") if "txt" in g.data else _text(meta.get("caption"))
        row = {"uid": uid, "url": _text(meta.get("url")), "caption": caption, "source_key": g.key,
               "width": None, "height": None, "original_width": None, "original_height": None,
               "sha256": None, "original_size": None}
        if g.problems:
            yield {**row, "status": g.problems[0][0], "error": "; ".join(p[1] for p in g.problems)}, None
            continue
        if bad_meta is not None:
            yield {**row, "status": st.BAD_METADATA, "error": bad_meta}, None
            continue
        raw = next((g.data[e] for e in _IMAGE_EXTS if e in g.data), None)
        if raw is None:
            yield {**row, "status": st.NOT_IMAGE, "error": "no image member in the WebDataset sample"}, None
            continue
        cols, img = process_image(raw, cfg, resizer)
        yield {**row, **cols}, img


def duplicate_uids(root: str, storage_options: dict | None, meta_files: list[str],
                   limit: int = 3) -> list[tuple[str, int]]:
    """Up to ``limit`` uids that occur more than once across the committed shards' metadata.

    Each tar is checked on its own while it is ingested; this is the cross-shard half, run
    once as a task before the manifest is written. DuckDB's hash aggregate spills to disk,
    so memory stays bounded whatever the number of rows.
    """
    import tempfile

    import duckdb

    from curation.io.fs import is_local, join

    fs, base = get_fs(root, storage_options)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                 "memory_limit": "1GB", "temp_directory": tempfile.gettempdir()})
    try:
        if is_local(fs):
            paths = [join(base, m) for m in meta_files]
        else:  # DuckDB reads through the same fsspec filesystem (no network extension)
            con.register_filesystem(fs)
            paths = [join(root.rstrip("/"), m) for m in meta_files]
        if not paths:
            return []
        rows = con.execute("SELECT uid, count(*) AS n FROM read_parquet(?) GROUP BY uid HAVING count(*) > 1 "
                           f"ORDER BY n DESC, uid LIMIT {int(limit)}", [paths]).fetchall()
        return [(str(u), int(n)) for u, n in rows]
    finally:
        con.close()
