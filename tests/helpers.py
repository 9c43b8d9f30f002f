"""The one test-data builder shared by every test package: tiny images, and small datasets written
with the real :class:`~curation.io.DatasetWriter` (no download stage, no network).

:func:`write_dataset` is the builder: per shard, a list of ``(row, image bytes or None, ext)``.
The others make the rows for the common cases and call it:

* :func:`make_dataset`: ``shards`` x ``per_shard`` small JPEGs plus failed rows (io, runner, stage tests);
* :func:`make_stream_dataset`: given shard sizes, with ``slice``/``clip_score`` columns, optional
  failed and corrupt samples (stream tests);
* :func:`row` + :func:`drawn_image`: one sample's metadata and a drawn image (score/filter tests).
"""
from __future__ import annotations

import hashlib
import io
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from curation.io import Dataset, DatasetWriter

Sample = tuple[dict[str, Any], "bytes | None", str]  # (metadata row, image bytes or None, extension)


# -- images -------------------------------------------------------------------------------
def jpeg_bytes(color=(200, 30, 30), size=(16, 16), quality=90) -> bytes:
    """A flat-colour JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


_IMAGE_CACHE: dict[tuple, bytes] = {}


def image_bytes(i: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """A small image whose colour encodes ``i`` (distinct bytes per sample; cached)."""
    key = (i, fmt, size)
    if key not in _IMAGE_CACHE:
        img = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i // 7) % 256))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        _IMAGE_CACHE[key] = buf.getvalue()
    return _IMAGE_CACHE[key]


def drawn_image(seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A random coloured ellipse on a random background, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h // 2)))
    d.ellipse([x0, y0, x0 + w // 2, y0 + h // 2], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        im = im.convert(mode)
    b = io.BytesIO()
    im.save(b, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return b.getvalue()


# -- rows ---------------------------------------------------------------------------------
def row(uid: str, caption: str | None, status: str = "success", w: int = 48, h: int = 40,
        **extra: Any) -> dict[str, Any]:
    """One sample's metadata as the download stage writes it (``extra`` adds columns)."""
    return {"uid": uid, "url": f"http://127.0.0.1/{uid}.jpg", "caption": caption, "status": status,
            "error": None if status == "success" else status, "width": w, "height": h,
            "original_width": w, "original_height": h,
            "sha256": hashlib.sha256(uid.encode()).hexdigest(), **extra}


# -- the builder --------------------------------------------------------------------------
def write_dataset(path: str, shards: Iterable[Sequence[Sample]], *, storage_options: dict | None = None,
                  stage: str = "test", config: dict | None = None, overwrite: bool = False) -> Dataset:
    """Write and commit a dataset: ``shards`` is, per shard, a list of ``(row, image bytes or
    None for a failed sample, ext)``."""
    w = DatasetWriter(str(path), stage=stage, config=config if config is not None else {"path": str(path)},
                      storage_options=storage_options, overwrite=overwrite)
    ids = []
    for sid, samples in enumerate(shards):
        with w.shard(sid) as sw:
            for r, img, ext in samples:
                sw.add(r, img, ext)
        ids.append(sid)
    return w.commit(ids)


def make_dataset(root: str, *, shards: int = 2, per_shard: int = 5, failures_per_shard: int = 1,
                 storage_options: dict | None = None, stage: str = "test") -> Dataset:
    """A dataset of ``shards`` shards, each with ``per_shard`` 16 px JPEGs and some failed rows."""
    def shard(s: int) -> list[Sample]:
        out: list[Sample] = []
        for i in range(per_shard):
            data = jpeg_bytes(((s * 37 + i * 11) % 256, (i * 53) % 256, 90))
            out.append(({"uid": f"s{s}-i{i}", "url": f"http://example.invalid/{s}/{i}.jpg",
                         "caption": f"sample {i} of shard {s}", "status": "success",
                         "sha256": hashlib.sha256(data).hexdigest(), "width": 16, "height": 16,
                         "original_width": 16, "original_height": 16}, data, "jpg"))
        for j in range(failures_per_shard):
            out.append(({"uid": f"s{s}-f{j}", "url": f"http://example.invalid/{s}/missing{j}.jpg",
                         "caption": "gone", "status": "http_404", "error": "HTTP Error 404"}, None, "jpg"))
        return out

    return write_dataset(root, [shard(s) for s in range(shards)], storage_options=storage_options, stage=stage,
                         config={"shards": shards, "per_shard": per_shard})


def make_stream_dataset(url: str, shard_sizes: list[int], *, failed_every: int = 0, storage_options=None,
                        corrupt: set[str] | frozenset[str] = frozenset(), fmt: str = "PNG",
                        prefix: str = "u") -> Dataset:
    """A dataset with ``shard_sizes[i]`` samples in shard ``i`` (replaces any old one at ``url``).

    Every ``failed_every``-th sample is a failed download (metadata row, no image); uids in
    ``corrupt`` get undecodable image bytes. Columns: ``slice`` (s0/s1/s2), ``clip_score``.
    """
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    shards: list[list[Sample]] = []
    n = 0
    for size in shard_sizes:
        samples: list[Sample] = []
        for _ in range(size):
            uid = f"{prefix}{n:05d}"
            r = {"uid": uid, "url": f"http://x/{n}", "caption": f"caption {n}", "status": "success",
                 "slice": f"s{n % 3}", "clip_score": (n % 10) / 10.0, "width": 8, "height": 8}
            if failed_every and n % failed_every == failed_every - 1:
                r["status"] = "failed_download"
                samples.append((r, None, ext))
            else:
                samples.append((r, b"\x00garbage" * 3 if uid in corrupt else image_bytes(n, fmt), ext))
            n += 1
        shards.append(samples)
    return write_dataset(url, shards, storage_options=storage_options, overwrite=True,
                         config={"sizes": shard_sizes, "prefix": prefix})


def manifest_without_timestamps(ds: Dataset) -> dict:
    """A deep copy of ``ds.manifest`` without its ``created_at`` stamps (its own and each history
    entry's), for comparing two runs' manifests."""
    import json

    m = json.loads(json.dumps(ds.manifest))
    m.pop("created_at")
    for h in m["history"]:
        h.pop("created_at")
    return m
