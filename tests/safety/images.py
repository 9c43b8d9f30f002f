"""Real photographs from scikit-image (shipped in the package) and the copies a crawl finds of them."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(name: str) -> Image.Image:
    import skimage.data as data

    a = getattr(data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return Image.fromarray(a[..., :3].astype(np.uint8))


def encode(im: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, quality=quality) if fmt == "JPEG" else im.save(buf, fmt)
    return buf.getvalue()


def near_copies(im: Image.Image) -> dict[str, bytes]:
    """Re-encoded, resized and slightly cropped copies (what PDQ must still match)."""
    w, h = im.size
    c = int(round(0.01 * w))  # PDQ tolerates crops of about 1%: 1% off every side of coffee moves 32 bits
    return {"reencoded": encode(im, quality=55),
            "resized": encode(im.resize((w * 3 // 5, h * 3 // 5), Image.Resampling.BICUBIC), quality=85),
            "cropped": encode(im.crop((c, 0, w, h - c // 2)), quality=85),
            "png": encode(im, "PNG")}


def windows(data: bytes, n: int = 6, size: int = 48) -> list[bytes]:
    """``n`` byte windows spread over ``data``'s compressed pixel data (JPEG after the start of
    scan, PNG after the first IDAT): format headers and Huffman tables are shared by every file
    of one encoder, so they are skipped."""
    if data[:2] == b"\xff\xd8":
        start = data.index(b"\xff\xda") + 16
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        start = data.index(b"IDAT") + 16
    else:
        start = min(len(data) // 4, 1024)
    step = max((len(data) - start - size) // n, 1)
    return [data[start + i * step:start + i * step + size] for i in range(n)]


def files_containing(root: str, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` that contains any of ``needles``."""
    import os

    hits = []
    for d, _, names in os.walk(root):
        for name in names:
            p = os.path.join(d, name)
            try:
                blob = open(p, "rb").read()
            except OSError:
                continue
            if any(n in blob for n in needles):
                hits.append(p)
    return hits
