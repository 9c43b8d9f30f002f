"""Image helpers for the synthetic corpus: encoding, a perceptual hash, near-duplicate
transforms and hostile payloads (decompression bombs, HTML posing as images).
"""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                 "html": "text/html; charset=utf-8"}


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """Encode deterministically (no timestamps or random metadata in any format)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, "JPEG", quality=quality, optimize=False)
    elif fmt == "png":
        img.save(buf, "PNG", compress_level=1)  # speed over size: a crawl mixes both
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=quality, method=0)  # method 4+ is ~5x slower
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * n))  # unnormalised DCT-II, like scipy's


def phash(img: Image.Image, fast: bool = False) -> int:
    """64-bit DCT perceptual hash (the ``imagehash.phash`` recipe: 32x32 grey, 8x8 low band,
    bits above the band's median). ``fast`` shrinks in two steps (``reducing_gap``): a close
    approximation, about 4x cheaper, for pre-checks only."""
    grey = img.convert("L")
    small = grey.resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0 if fast else None)
    g = np.asarray(small, dtype=np.float64)
    c = _dct_matrix(32)
    low = (c @ g @ c.T)[:8, :8]  # rows then columns, same as dct(dct(g, axis=0), axis=1)
    bits = (low > np.median(low)).flatten()
    return int(sum(1 << i for i, b in enumerate(bits[::-1]) if b))


def hamming(a: int, b: int) -> int:
    return int(bin(a ^ b).count("1"))


def near_duplicate(img: Image.Image, rng: np.random.Generator, strength: float,
                   min_side: int = 200) -> tuple[Image.Image, int]:
    """A mildly edited copy: crop a few percent, shift, resize; plus the JPEG quality to save it at.

    ``strength`` in [0, 1] scales every edit, so a caller can back off until the copy stays
    within a perceptual-hash budget of the original. The shorter side does not shrink below
    ``min_side`` (when the original had it), so size filters treat the copy like the original.
    """
    w, h = img.size
    cx = int(round(w * rng.uniform(0.0, 0.04) * strength))
    cy = int(round(h * rng.uniform(0.0, 0.04) * strength))
    dx = int(round(rng.uniform(-0.02, 0.02) * w * strength))
    left, top = max(0, cx + min(dx, 0)), max(0, cy)
    right, bottom = min(w, w - cx + max(dx, 0)), min(h, h - cy)
    out = img.crop((left, top, max(right, left + 8), max(bottom, top + 8)))
    scale = 1.0 - rng.uniform(0.0, 0.2) * strength
    scale = min(1.0, max(scale, min(min_side, min(w, h)) / min(out.size)))
    nw, nh = max(8, int(round(out.width * scale))), max(8, int(round(out.height * scale)))
    out = out.resize((nw, nh), Image.Resampling.BICUBIC)
    quality = int(rng.integers(55, 86))
    return out, quality


@lru_cache(maxsize=2)
def decompression_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of ``width x height`` pixels that is only tens of KB.

    Decoding it fully would allocate ``width*height`` bytes; a safe reader rejects it from
    the header's declared size (and PIL raises ``DecompressionBombError`` on open).
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 500
    parts = [comp.compress(block) for _ in range(height // 500)]
    parts.append(comp.compress(row * (height % 500)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def html_page(caption: str) -> bytes:
    """The body a broken image link often returns: an HTML page (soft 404, login wall)."""
    return (f"<!DOCTYPE html><html><head><title>Page not found</title></head><body>"
            f"<h1>Sorry, this image is no longer available</h1><p>{caption}</p>"
            f"<a href=\"/\">Back to the gallery</a></body></html>").encode()
