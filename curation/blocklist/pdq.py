"""PDQ perceptual hashes (Facebook's PDQ, via the ``pdqhash`` package) in ThreatExchange's form.

A PDQ hash is 256 bits; its text form is 64 hex digits: the bit vector ``pdqhash.compute``
returns, read in order, most significant bit first (``np.packbits`` order). Two images
match when their hashes differ in at most ``distance`` bits (PDQ's recommended 31 is the
default everywhere in this project). ``pdq_quality`` (0-100) is PDQ's own confidence: flat
or tiny images score low and their hashes are unreliable.
"""
from __future__ import annotations

import numpy as np

PDQ_BITS = 256
PDQ_HEX = PDQ_BITS // 4
DEFAULT_DISTANCE = 31
# PDQ's reference hasher downsamples large inputs before the 64x64 Jarosz filter; decoding a
# multi-megapixel photo at full size would cost far more than the hash. Pillow's draft mode
# (JPEG DCT scaling) plus a thumbnail to this side keeps the hash within a few bits.
_MAX_SIDE = 512


def to_hex(bits: np.ndarray) -> str:
    """64-hex-digit form of a 256-element 0/1 vector (element 0 is the most significant bit)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def from_hex(h: str) -> np.ndarray:
    """The 32 bytes of a PDQ hex string (raises ValueError when it is not 64 hex digits)."""
    s = h.strip().lower()
    if len(s) != PDQ_HEX:
        raise ValueError(f"a PDQ hash has {PDQ_HEX} hex digits, got {len(s)}")
    return np.frombuffer(bytes.fromhex(s), dtype=np.uint8)


def pdq_array(rgb: np.ndarray) -> tuple[str, int]:
    """(hex, quality) of an ``H x W x 3`` uint8 RGB array."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return to_hex(bits), int(quality)


def pdq_image(im) -> tuple[str, int]:
    """(hex, quality) of a PIL image (any mode: alpha is flattened on white; large images are reduced first)."""
    from PIL import Image

    from curation.io.images import flatten

    if max(im.size) > 2 * _MAX_SIDE:
        im = im.copy()
        im.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.BILINEAR)
    rgb = flatten(im)
    return pdq_array(np.asarray(rgb if rgb.mode == "RGB" else rgb.convert("RGB")))


def pdq_bytes(data: bytes, max_pixels: int | None = None) -> tuple[str | None, int | None]:
    """(hex, quality) of encoded image bytes, or (None, None) when they are not an allowed,
    affordable, decodable image (:func:`curation.io.images.decode_rgb`: header checks first,
    JPEG draft decoding for large photos)."""
    from curation.io.images import DEFAULT_MAX_PIXELS, ImageError, decode_rgb

    try:
        im = decode_rgb(data, need=(_MAX_SIDE, _MAX_SIDE), max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    except ImageError:
        return None, None
    with im:
        return pdq_image(im)


def hamming_to_list(h: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Hamming distances from one hash (32 uint8) to every row of ``table`` (N x 32 uint8)."""
    if len(table) == 0:
        return np.zeros(0, dtype=np.int64)
    x = np.bitwise_xor(table.view(np.uint64), h.view(np.uint64)[None, :])
    return np.bitwise_count(x).sum(axis=1).astype(np.int64)
