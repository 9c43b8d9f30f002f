"""fsspec helpers: resolve URLs, join paths, and commit files atomically.

Guarantee: :func:`atomic_write_bytes` and :func:`atomic_put_file` never leave a partially
written file under the final name. Local paths use write-to-hidden-temp + ``os.replace``;
object stores use one PUT of a fully written local file, which S3 makes visible only
when complete. Temp names start with ``.``, end with ``.tmp`` and carry the writer's run
id (``.<name>~<run id>~<random>.tmp``), so listings skip them and :func:`clean_temps`
removes exactly the writer's own temps and stale ones, never a live writer's.

:func:`create_exclusive` is the one primitive leases are built on: ``O_EXCL`` locally, a
conditional PUT (``If-None-Match: *``) on S3; :func:`replace_if_match` is the matching
compare-and-swap (``If-Match: <ETag>`` on S3).
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
import time
import uuid
from typing import Any, Iterator, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

_OPTIONS: dict[str, dict[str, Any]] = {}


def set_default_storage_options(protocol: str, **options: Any) -> None:
    """Default fsspec options for a protocol, e.g. ``s3`` with ``endpoint_url``.

    Environment variables work too: ``CURATION_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL``)
    is passed to s3fs as ``endpoint_url``.
    """
    _OPTIONS[protocol] = dict(options)


def storage_options_for(protocol: str) -> dict[str, Any]:
    opts = dict(_OPTIONS.get(protocol, {}))
    if protocol in ("s3", "s3a"):
        ep = os.environ.get("CURATION_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if ep and "endpoint_url" not in opts and "client_kwargs" not in opts:
            opts["endpoint_url"] = ep
    return opts


def get_fs(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a URL or local path."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    opts = storage_options_for(protocol)
    opts.update(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(*parts: str) -> str:
    return posixpath.join(*parts)


_TAG_RE = re.compile(r"[^A-Za-z0-9_-]")
_TEMP_RE = re.compile(r"^\..*~([A-Za-z0-9_-]*)~[^/~]*\.tmp$")


def _tag(run_id: str | None) -> str:
    return _TAG_RE.sub("_", run_id or "")[:40]


def _temp_name(path: str, run_id: str | None = None) -> str:
    d, base = posixpath.split(path)
    return posixpath.join(d, f".{base}~{_tag(run_id)}~{uuid.uuid4().hex[:8]}.tmp")


def temp_run_id(name: str) -> str | None:
    """The run id a temp file name carries (``""`` for none), or None if it is no temp file."""
    base = posixpath.basename(name)
    if not (base.startswith(".") and base.endswith(".tmp")):
        return None
    m = _TEMP_RE.match(base)
    return m.group(1) if m else ""


def atomic_put_file(fs: fsspec.AbstractFileSystem, local_path: str, path: str, *, run_id: str | None = None) -> None:
    """Move a finished local file to ``path`` on ``fs`` atomically (consumes ``local_path``).

    Local targets go through a temp file named with ``run_id`` beside the target.
    """
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = _temp_name(path, run_id)
        try:
            # same filesystem: rename; otherwise copy to a temp beside the target first
            try:
                os.replace(local_path, tmp)
            except OSError:
                import shutil

                shutil.copyfile(local_path, tmp)
                os.unlink(local_path)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        try:
            fs.put_file(local_path, path)
        finally:
            if os.path.exists(local_path):
                os.unlink(local_path)
        fs.invalidate_cache(posixpath.dirname(path))


def local_temp_file(fs: fsspec.AbstractFileSystem | None, path: str | None, suffix: str = "",
                    run_id: str | None = None) -> tuple[int, str]:
    """``(fd, path)`` of a new local temp file named with ``run_id``: beside ``path`` for a
    local target (same device, so the final rename is atomic), else in the system temp dir."""
    d = _local_temp_dir(fs, path) if fs is not None and path is not None else None
    return tempfile.mkstemp(prefix=f".curation~{_tag(run_id)}~", suffix=suffix + ".tmp", dir=d)


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes, *, run_id: str | None = None) -> None:
    """Write ``data`` to ``path`` so readers see the old content or all of the new."""
    fd, local = local_temp_file(fs, path, run_id=run_id)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    atomic_put_file(fs, local, path, run_id=run_id)


@contextlib.contextmanager
def local_staging_file(fs: fsspec.AbstractFileSystem, path: str, suffix: str = "", *,
                       run_id: str | None = None) -> Iterator[str]:
    """Yield a local temp path to write into; on success it is committed to ``path``.

    On an exception nothing appears under ``path`` and the temp file is removed.
    """
    fd, local = local_temp_file(fs, path, suffix, run_id)
    os.close(fd)
    try:
        yield local
        atomic_put_file(fs, local, path, run_id=run_id)
    finally:
        if os.path.exists(local):
            os.unlink(local)


def _local_temp_dir(fs: fsspec.AbstractFileSystem, path: str) -> str | None:
    """Stage local files next to their target (same device: rename is atomic)."""
    if is_local(fs):
        d = posixpath.dirname(path)
        os.makedirs(d, exist_ok=True)
        return d
    return None


def clean_temps(fs: fsspec.AbstractFileSystem, directory: str, *, run_id: str | None = None,
                stale_after: float | None = None) -> int:
    """Remove temp files in ``directory`` that are certainly dead; return how many.

    Removed: temps named with ``run_id`` (the caller's own run, whose writers have all
    finished), and any temp not modified for ``stale_after`` seconds (a killed writer's).
    With neither given, every temp is removed (a caller that knows no one else writes).
    A temp of another, live run is never touched. Object stores hold no temps (files are
    staged locally and PUT whole), so there is nothing to list there.
    """
    if not is_local(fs) or not fs.exists(directory):
        return 0
    n = 0
    now = time.time()
    for info in fs.ls(directory, detail=True):
        p = info["name"]
        owner = temp_run_id(p)
        if owner is None:
            continue
        mine = run_id is not None and owner == _tag(run_id)
        if run_id is not None or stale_after is not None:
            if not mine and (stale_after is None or now - _mtime(info, now) < stale_after):
                continue
        try:
            fs.rm(p)
            n += 1
        except FileNotFoundError:
            pass
    return n


def _mtime(info: dict[str, Any], default: float) -> float:
    """Modification time (epoch seconds) from an fsspec ``info`` dict."""
    for k in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return default


# -- exclusive create and compare-and-swap (what leases are built on) -------------------
class PreconditionFailed(Exception):
    """An exclusive create found the name taken, or a compare-and-swap found it changed."""


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    return any(p in ("s3", "s3a") for p in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol))


def _precondition(e: OSError) -> bool:
    text = str(e)
    return "pre-condition" in text or "precondition" in text.lower() or "412" in text


def create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> str | None:
    """Create ``path`` with ``data`` only if it does not exist; return its version tag.

    Local: ``open(O_CREAT | O_EXCL)``. S3: one PUT with ``If-None-Match: *`` (AWS S3,
    SeaweedFS, MinIO honour it). Other filesystems: ``pipe_file(mode="create")``.
    Returns the ETag on object stores (for :func:`replace_if_match`), else None.

    Raises:
        PreconditionFailed: ``path`` exists (someone else created it first).
    """
    if is_local(fs):
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise PreconditionFailed(path) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return None
    try:
        out = fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        raise PreconditionFailed(path) from None
    except OSError as e:
        if _precondition(e):
            raise PreconditionFailed(path) from None
        raise
    fs.invalidate_cache(path)
    return (out or {}).get("ETag") if isinstance(out, dict) else None


def replace_if_match(fs: fsspec.AbstractFileSystem, path: str, data: bytes, etag: str | None) -> str | None:
    """Overwrite ``path`` with ``data`` if it still is the version ``etag``; return the new tag.

    S3: one PUT with ``If-Match: <etag>``. Local (and ``etag`` None): an atomic replace;
    the caller has checked the content it replaces (local leases are renewed only by their
    holder, so there is no competing writer to lose against).

    Raises:
        PreconditionFailed: the object changed since ``etag`` was read.
    """
    if _is_s3(fs) and etag:
        try:
            out = fs.pipe_file(path, data, IfMatch=etag)
        except OSError as e:
            if _precondition(e):
                raise PreconditionFailed(path) from None
            raise
        fs.invalidate_cache(path)
        return out.get("ETag") if isinstance(out, dict) else None
    atomic_write_bytes(fs, path, data)
    return None


def read_with_tag(fs: fsspec.AbstractFileSystem, path: str) -> tuple[bytes, str | None]:
    """``(content, ETag or None)`` of ``path``; FileNotFoundError when it does not exist."""
    if _is_s3(fs):
        fs.invalidate_cache(path)
        info = fs.info(path)
        data = cast(bytes, fs.cat_file(path))  # fsspec is untyped: cat_file returns bytes
        # the ETag read before the content: a CAS against it fails if the content changed in between
        return data, info.get("ETag")
    return cast(bytes, fs.cat_file(path)), None  # fsspec is untyped: cat_file returns bytes


def read_bytes(fs: fsspec.AbstractFileSystem, path: str, start: int | None = None, end: int | None = None) -> bytes:
    """Read a whole file, or the byte range ``[start, end)``."""
    # fsspec is untyped: cat_file returns bytes
    if start is None:
        return cast(bytes, fs.cat_file(path))
    return cast(bytes, fs.cat_file(path, start=start, end=end))
