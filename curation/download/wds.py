"""Re-ingesting existing WebDataset shards (local, s3://, http://) into our format.

Each input tar becomes one output shard. Samples are grouped by key (the member name up to
its first dot, webdataset's rule); only image, ``.txt`` and ``.json`` members are read -
never pickle or other executable payloads. Images go through the same checks and resizer
as downloads, and ``sha256``/``original_size`` describe the bytes found in the tar.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from typing import Any, Iterator

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
            out.extend(sorted(proto + p if proto else p for p in fs.glob(path)))
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


def iter_groups(url: str, storage_options: dict | None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` for each sample of a tar, in tar order (only safe members read)."""
    fs, path = get_fs(url, storage_options)
    key, group = None, {}
    try:
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = posixpath.basename(m.name)
                if base.startswith(".") or "." not in base:
                    continue
                stem, ext = posixpath.join(posixpath.dirname(m.name), base.split(".", 1)[0]), base.split(".", 1)[1].lower()
                if stem != key and key is not None:
                    yield key, group
                    group = {}
                key = stem
                if ext in _IMAGE_EXTS + ("txt", "json"):
                    group[ext] = tf.extractfile(m).read()
    except (tarfile.ReadError, EOFError) as e:
        raise InputError(f"{url}: corrupt or truncated tar ({e})") from None
    if key is not None:
        yield key, group


def ingest_rows(spec: dict[str, Any], cfg: DownloadConfig) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Yield ``(row, image)`` for every sample of one input tar."""
    resizer = make_resizer(cfg)
    for key, g in iter_groups(spec["tar"], spec.get("storage_options")):
        meta = {}
        if "json" in g:
            try:
                meta = json.loads(g["json"])
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = {}
        caption = g["txt"].decode("utf-8", "replace") if "txt" in g else meta.get("caption")
        uid = str(meta.get("uid") or hashlib.sha256(f"{spec['tar']}\0{key}".encode()).hexdigest()[:24])
        row = {"uid": uid, "url": meta.get("url"), "caption": caption, "source_key": key,
               "width": None, "height": None, "original_width": None, "original_height": None,
               "sha256": None, "original_size": None}
        raw = next((g[e] for e in _IMAGE_EXTS if e in g), None)
        if raw is None:
            yield {**row, "status": st.NOT_IMAGE, "error": "no image member in the WebDataset sample"}, None
            continue
        cols, img = process_image(raw, cfg, resizer)
        yield {**row, **cols}, img
