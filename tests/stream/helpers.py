"""Tiny curated datasets for the stream tests, written with the real DatasetWriter."""
from __future__ import annotations

import io

from PIL import Image

from curation.io import Dataset, DatasetWriter

_CACHE: dict[tuple, bytes] = {}


def image_bytes(i: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """A small image whose colour encodes ``i`` (distinct bytes per sample)."""
    key = (i, fmt, size)
    if key not in _CACHE:
        img = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i // 7) % 256))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        _CACHE[key] = buf.getvalue()
    return _CACHE[key]


def make_dataset(url: str, shard_sizes: list[int], *, failed_every: int = 0, storage_options=None,
                 corrupt: set[str] = frozenset(), fmt: str = "PNG", prefix: str = "u") -> Dataset:
    """A dataset with ``shard_sizes[i]`` samples in shard ``i``.

    Every ``failed_every``-th sample is a failed download (metadata row, no image); uids in
    ``corrupt`` get undecodable image bytes. Columns: ``slice`` (s0/s1/s2), ``clip_score``.
    """
    w = DatasetWriter(url, stage="test", config={"sizes": shard_sizes, "prefix": prefix},
                      storage_options=storage_options, overwrite=True)
    n = 0
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for sid, size in enumerate(shard_sizes):
        with w.shard(sid) as sw:
            for _ in range(size):
                uid = f"{prefix}{n:05d}"
                row = {"uid": uid, "url": f"http://x/{n}", "caption": f"caption {n}", "status": "success",
                       "slice": f"s{n % 3}", "clip_score": (n % 10) / 10.0, "width": 8, "height": 8}
                if failed_every and n % failed_every == failed_every - 1:
                    row["status"] = "failed_download"
                    sw.add(row, None)
                else:
                    data = b"\x00garbage" * 3 if uid in corrupt else image_bytes(n, fmt)
                    sw.add(row, data, ext)
                n += 1
    return w.commit(list(range(len(shard_sizes))))
