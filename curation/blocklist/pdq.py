"""PDQ perceptual hashes (Facebook's PDQ, via the ``pdqhash`` package) in ThreatExchange's form.

A PDQ hash is 256 bits; its text form is 64 hex digits: the bit vector ``pdqhash.compute``
returns, read in order, most significant bit first (``np.packbits`` order). Two images
match when their hashes differ in at most ``distance`` bits (PDQ's recommended 31 is the
default everywhere in this project). ``pdq_quality`` (0-100) is PDQ's own confidence: flat
or tiny images score low and their hashes are unreliable.

The hash is meant to be PDQ's hash of the image at its original resolution (what any other
PDQ implementation computes from the file), but the download worker holds a smaller frame
(a JPEG draft decode), and hashing that frame with ``pdqhash`` is both slower than needed and
~8 bits off (``pdqhash``'s front end depends on the input size). PDQ's front end is: luma;
two box-filter passes of ``w = ceil(side / 128)`` pixels along each axis; then one pixel
sampled per 64th of the side, giving a 64x64 buffer; the DCT, the median threshold and the
quality come after. :func:`luma64` evaluates that front end *in the original's pixel
coordinates* on whatever frame it is given: each buffer sample is the two-pass box filter's
tent (half-width ``w`` original pixels, centred where PDQ samples, including the half-pixel
shift of even windows) integrated over the frame's pixels. ``pdqhash`` then hashes the 64x64
buffer (its front end is the identity at 64x64). Measured on 100 crops of scikit-image's
photos (bench/RESULTS.md "Safety signals"), against ``pdqhash`` on the full-size decode:

* 640x480 JPEG hashed from its 320x240 draft: 1.5 bits mean (p95 6, max 8); ``pdqhash`` on
  the same 320x240 frame: 8.5 (p95 16, max 24);
* 2048x1536 from its 256x192 draft: 2.1 bits (p95 6, max 10);
* cost on the 320x240 frame: ~0.2 ms, against 0.6 ms for ``pdqhash`` on that frame and
  3.4 ms on the full 640x480 decode.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

PDQ_BITS = 256
PDQ_HEX = PDQ_BITS // 4
DEFAULT_DISTANCE = 31
_GRID = 64            # PDQ's luma buffer side
_REDUCE_ABOVE = 1024  # frames larger than this are box-reduced by an integer factor first (bounds memory and cost)
_DECODE_SIDE = 256    # pdq_bytes decodes JPEGs in draft mode down to this side (2 bits from the full decode)


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
    """(hex, quality) of an ``H x W x 3`` uint8 RGB array by ``pdqhash`` alone (its own front end)."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return to_hex(bits), int(quality)


@lru_cache(maxsize=256)
def _taps(original: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel indices, weights), each ``(64, T)``: PDQ's front end along an axis of ``original``
    pixels, evaluated on a frame of ``frame`` pixels spanning the same extent.

    In the original's coordinates (pixel ``j`` covers ``[j, j + 1)``): PDQ samples pixel
    ``floor((i + 0.5) * original / 64)`` after two box passes of ``w`` pixels; a box of even
    width covers one more pixel after its centre than before, so two passes shift the result
    by one pixel. Two passes of a ``w`` box are the tent ``max(0, 1 - |x - centre| / w)``
    sampled at pixel centres; here that tent is integrated over the frame's pixels instead.
    """
    win = (original + 2 * _GRID - 1) // (2 * _GRID)  # pdqhash's computeJaroszFilterWindowSize
    centre = np.floor((np.arange(_GRID) + 0.5) * original / _GRID) + 0.5 + (1.0 if win % 2 == 0 else 0.0)
    scale = frame / original
    c, half = centre * scale, max(win * scale, 0.5)  # in frame pixels; at least nearest-pixel sampling
    n = int(np.ceil(2 * half)) + 2
    idx = np.floor(c - half).astype(np.int64)[:, None] + np.arange(n)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs(idx + 0.5 - c[:, None]) / half)
    w[(idx < 0) | (idx >= frame)] = 0.0  # PDQ's boxes shrink at the borders: renormalise what is inside
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, frame - 1), w.astype(np.float32)


def luma64(im, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """PDQ's 64x64 luma buffer (float32) of the image ``im`` shows, as PDQ computes it from the
    image at ``original_size`` (default: ``im.info["curation_original_size"]``, else ``im.size``).

    ``im`` may be any mode (alpha is flattened on white) and any size covering the whole image
    (a JPEG draft decode, a reduction).
    """
    from curation.io.images import flatten

    ow, oh = original_size or im.info.get("curation_original_size") or im.size
    g = flatten(im)
    if g.mode != "L":
        g = g.convert("L")  # ITU-R 601 luma: PDQ's coefficients, rounded to 8 bits per pixel
    k = max(g.size) // _REDUCE_ABOVE
    if k >= 2:
        g = g.reduce(k)  # exact k x k means, far below PDQ's own filter width at that size
    luma = np.asarray(g, dtype=np.float32)
    fh, fw = luma.shape
    iy, wy = _taps(oh, fh)
    ix, wx = _taps(ow, fw)
    rows = np.einsum("ntw,nt->nw", luma[iy], wy)  # (64, fw): no BLAS (no thread pool on small matrices)
    return np.einsum("mnt,nt->mn", rows[:, ix], wx)


def pdq_image(im, original_size: tuple[int, int] | None = None) -> tuple[str, int]:
    """(hex, quality) of a PIL image (any mode: alpha is flattened on white), as PDQ hashes the
    image at ``original_size`` (see :func:`luma64` and the module notes)."""
    import pdqhash

    buf = np.ascontiguousarray(np.clip(np.rint(luma64(im, original_size)), 0, 255).astype(np.uint8))
    grey3 = np.lib.stride_tricks.as_strided(buf, shape=(_GRID, _GRID, 3), strides=buf.strides + (0,))
    bits, quality = pdqhash.compute(grey3)  # R = G = B: pdqhash's luma is the buffer; at 64x64 its filter is 1 px
    return to_hex(bits), int(quality)


def pdq_bytes(data: bytes, max_pixels: int | None = None) -> tuple[str | None, int | None]:
    """(hex, quality) of encoded image bytes, or (None, None) when they are not an allowed,
    affordable, decodable image (:func:`curation.io.images.open_image`: header checks first,
    JPEG draft decoding for large photos)."""
    from curation.io.images import DEFAULT_MAX_PIXELS, ImageError, load_frame, open_image

    try:
        im = open_image(data, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        size = im.size
        frame = load_frame(im, (_DECODE_SIDE, _DECODE_SIDE))
    except ImageError:
        return None, None
    with frame:
        try:
            return pdq_image(frame, size)
        except (OSError, ValueError):  # a mode that does not convert (as decode_rgb refuses it)
            return None, None


def hamming_to_list(h: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Hamming distances from one hash (32 uint8) to every row of ``table`` (N x 32 uint8)."""
    if len(table) == 0:
        return np.zeros(0, dtype=np.int64)
    x = np.bitwise_xor(table.view(np.uint64), h.view(np.uint64)[None, :])
    return np.bitwise_count(x).sum(axis=1).astype(np.int64)
