"""64-bit DCT perceptual hash (pHash) of image bytes, computed per shard as Ray tasks.

The hash follows the classic pHash recipe (also used by ``imagehash.phash``): greyscale,
resize to 32x32, 2-D DCT-II, keep the 8x8 lowest frequencies, one bit per coefficient
(1 when above the median of the 64). Visually similar images (re-encoded, resized,
slightly recoloured) land within a few bits of each other.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

HASH_BITS = 64
_SIZE = 32  # resize target before the DCT
_LOW = 8    # low-frequency block kept (8x8 = 64 bits)


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _SIZE) -> np.ndarray:
    """Unnormalised DCT-II matrix (scipy's ``dct`` default, as imagehash uses): ``C @ x``.

    The scaling matters: with the orthonormal variant the DC row/column shrink and the
    median test flips different bits, so hashes would not match other pHash tools.
    """
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * (2 * i + 1) * k / (2 * n))


def phash_pixels(grey: np.ndarray) -> int:
    """pHash of a 32x32 greyscale float array (exposed for tests)."""
    c = _dct_matrix()
    low = (c @ grey @ c.T)[:_LOW, :_LOW].ravel()
    mid = np.sort(low)[_LOW * _LOW // 2 - 1:_LOW * _LOW // 2 + 1]
    median = (mid[0] + mid[1]) / 2  # np.median of the 64 values, without its generic machinery (~30 us)
    return int(np.packbits(low > median).view(">u8")[0])


def phash_image(im, fast: bool = False) -> int:
    """pHash of a decoded PIL image (any mode: greyscale, then 32x32 Lanczos, as :func:`phash_bytes`).

    ``fast``: reduce by an integer box filter first (Pillow's ``reducing_gap=2``): 3x cheaper on a
    640x480 frame, within 0.1-0.2 bits of the exact hash on average (measured on photos).
    """
    from PIL import Image

    grey = im.convert("L").resize((_SIZE, _SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0 if fast else None)
    return phash_pixels(np.asarray(grey, dtype=np.float64))


def phash_bytes(data: bytes) -> int | None:
    """pHash of encoded image bytes, or None when the bytes do not decode as an allowed image."""
    from curation.io.images import open_image

    try:
        with open_image(data) as im:
            return phash_image(im)
    except Exception:  # undecodable member: no hash, the sample is simply not phash-deduped
        return None


def to_hex(h: int | None) -> str | None:
    """16-hex-char form stored in the ``phash`` column."""
    return None if h is None else f"{h:016x}"


def from_hex(s: str | None) -> int | None:
    return None if s is None else int(s, 16)


def phash_shard(shard_id: int, *, url: str, storage_options: dict, version: int) -> dict:
    """Ray task body: pHash every image of one shard (one sequential pass over its tar).

    Returns ``{"uid": [...], "phash": [hex or None, ...]}`` for the samples that have an image.
    """
    from curation.io import Dataset

    ds = Dataset(url, storage_options, version=version)
    uids, hashes = [], []
    for s in ds.iter_samples([shard_id], columns=["uid", "key"]):
        uids.append(s["uid"])
        hashes.append(to_hex(phash_bytes(s["image"])))
    return {"uid": uids, "phash": hashes}
