"""Tiny datasets for score/filter tests, written with DatasetWriter (no download stage)."""
from __future__ import annotations

import hashlib
import io
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageDraw

from curation.io import Dataset, DatasetWriter


def drawn_image(seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A random coloured ellipse on a random background, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h // 2)))
    d.ellipse([x0, y0, x0 + w // 2, y0 + h // 2], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    if mode == "P":
        im = im.convert("P", palette=Image.ADAPTIVE)
    elif mode != "RGB":
        im = im.convert(mode)
    b = io.BytesIO()
    im.save(b, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return b.getvalue()


def row(uid: str, caption: str | None, status: str = "success", w: int = 48, h: int = 40,
        **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "url": f"http://127.0.0.1/{uid}.jpg", "caption": caption, "status": status,
            "error": None if status == "success" else status, "width": w, "height": h,
            "original_width": w, "original_height": h,
            "sha256": hashlib.sha256(uid.encode()).hexdigest(), **extra}


def write_dataset(path: str, shards: Iterable[list[tuple[dict, bytes | None, str]]]) -> Dataset:
    """``shards``: per shard, a list of (row, image bytes or None for a failed sample, ext)."""
    w = DatasetWriter(str(path), stage="test", config={"path": str(path)})
    ids = []
    for sid, samples in enumerate(shards):
        with w.shard(sid) as sw:
            for r, img, ext in samples:
                sw.add(r, img, ext)
        ids.append(sid)
    return w.commit(ids)
