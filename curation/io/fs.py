"""fsspec helpers: resolve URLs, join paths, and commit files atomically.

Guarantee: :func:`atomic_write` and :func:`atomic_put_file` never leave a partially
written file under the final name. Local paths use write-to-hidden-temp + ``os.replace``;
object stores use one PUT of a fully written local file, which S3 makes visible only
when complete. Temp names start with ``.`` and end with ``.tmp``, so listings skip them
and :func:`clean_temps` removes what a killed writer left.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
import uuid
from typing import Any, Iterator

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


def _temp_name(path: str) -> str:
    d, base = posixpath.split(path)
    return posixpath.join(d, f".{base}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_put_file(fs: fsspec.AbstractFileSystem, local_path: str, path: str) -> None:
    """Move a finished local file to ``path`` on ``fs`` atomically (consumes ``local_path``)."""
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = _temp_name(path)
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


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old content or all of the new."""
    fd, local = tempfile.mkstemp(prefix=".curation-", suffix=".tmp", dir=_local_temp_dir(fs, path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    atomic_put_file(fs, local, path)


@contextlib.contextmanager
def local_staging_file(fs: fsspec.AbstractFileSystem, path: str, suffix: str = "") -> Iterator[str]:
    """Yield a local temp path to write into; on success it is committed to ``path``.

    On an exception nothing appears under ``path`` and the temp file is removed.
    """
    fd, local = tempfile.mkstemp(prefix=".curation-", suffix=suffix + ".tmp", dir=_local_temp_dir(fs, path))
    os.close(fd)
    try:
        yield local
        atomic_put_file(fs, local, path)
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


def clean_temps(fs: fsspec.AbstractFileSystem, directory: str) -> int:
    """Remove temp files a killed writer left in ``directory``; return how many."""
    if not fs.exists(directory):
        return 0
    n = 0
    for p in fs.ls(directory, detail=False):
        base = posixpath.basename(p)
        if base.startswith(".") and base.endswith(".tmp"):
            try:
                fs.rm(p)
                n += 1
            except FileNotFoundError:
                pass
    return n


def read_bytes(fs: fsspec.AbstractFileSystem, path: str, start: int | None = None, end: int | None = None) -> bytes:
    """Read a whole file, or the byte range ``[start, end)``."""
    if start is None:
        return fs.cat_file(path)
    return fs.cat_file(path, start=start, end=end)
