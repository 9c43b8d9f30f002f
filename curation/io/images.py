"""The one safe way the package opens image bytes (DESIGN.md 5.5: hostile input).

Every decode site in the package calls :func:`open_image` (a test greps the package for any
other ``Image.open``). Guarantees, checked on the header before a single pixel is decoded:

* only an allow-listed format is ever parsed: JPEG (MPO included), PNG (first frame of APNG),
  WebP (first frame), GIF (first frame), BMP. EPS, PostScript and PDF can never be enabled
  (an EPS file named ``.jpg`` must not reach Ghostscript), and neither can any other plugin:
  Pillow is told which plugins it may try (``formats=``), so the file name and the bytes'
  claims do not matter;
* at most ``max_pixels`` pixels (and never more than Pillow's own ``MAX_IMAGE_PIXELS``): a
  decompression bomb is refused from its header, and Pillow's ``DecompressionBombWarning`` is
  an error, not a warning;
* at most ``max_decoded_bytes`` for the decoded frame: pixels x channels x bytes per sample as
  Pillow stores them (3-channel images take 4 bytes per pixel), so a 16-bit or many-channel
  image is refused by its cost, not its pixel count;
* JPEG draft mode (DCT-domain downscaling by 1/2..1/8) when the caller only needs a smaller
  image (:func:`decode`), so a large photo never decodes at full size for a thumbnail.

Failures raise :class:`ImageError` with a short ``reason`` and a one-line message naming what
is wrong. This module also caps OpenCV (``OPENCV_IO_MAX_IMAGE_PIXELS``) for any later
``import cv2`` in the process.
"""
from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from typing import IO, Union

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_DECODED_BYTES = 256 * 1024 * 1024  # an 8-bit RGBA image at the pixel cap fits

# OpenCV reads its cap once, when the library loads: set it before anything imports cv2.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

from PIL import Image  # noqa: E402  (after the OpenCV cap, in case Pillow's import pulls cv2 in one day)

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# Pillow format ids that stay impossible whatever a caller passes.
FORBIDDEN_FORMATS = frozenset({"EPS", "PS", "PDF", "XPS"})

Source = Union[bytes, bytearray, memoryview, str, os.PathLike, IO[bytes]]

# Signatures of common non-allowed files, only to name them in the error.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"), (b"%PDF", "PDF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"), (b"<!DOCTYPE", "HTML"),
    (b"<html", "HTML"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"),
)


class ImageError(ValueError):
    """Bytes that are not an allowed, affordable, decodable image.

    Attributes:
        reason: ``empty``, ``not_image`` (not an allowed format), ``too_many_pixels``,
            ``over_memory_budget`` or ``undecodable`` (an allowed format that fails to decode).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def sniff(head: bytes) -> str | None:
    """A name for what ``head`` (the first bytes of a file) is, when it is a known non-image type."""
    h = head.lstrip()[:16]
    for sig, name in _SIGNATURES:
        if h[:len(sig)].lower() == sig.lower():
            return name
    if head[4:8] == b"ftyp":
        return f"ISO media ({head[8:12].decode('ascii', 'replace').strip()})"  # HEIC/AVIF/MP4
    return None


def _head_of(fp) -> bytes:
    try:
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "rb") as f:
                return f.read(32)
        fp.seek(0)
        return fp.read(32)
    except (OSError, AttributeError, ValueError):
        return b""


_BYTES_PER_SAMPLE = {"I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "1": 1}


def decoded_bytes(img: Image.Image) -> int:
    """Bytes Pillow allocates to decode ``img``'s frame: pixels x channels x bytes per sample
    (Pillow stores 2-4 channel 8-bit images in 4 bytes per pixel)."""
    bands = len(img.getbands())
    per_pixel = _BYTES_PER_SAMPLE.get(img.mode, 1) * (4 if bands > 1 else bands)
    return img.width * img.height * per_pixel


def _check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    fmts = tuple(f.upper() for f in formats)
    bad = [f for f in fmts if f in FORBIDDEN_FORMATS]
    if bad:
        raise ValueError(f"formats: {', '.join(bad)} can never be decoded (PostScript/PDF run an interpreter)")
    return fmts


def open_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
               formats: tuple[str, ...] | list[str] = ALLOWED_FORMATS) -> Image.Image:
    """Open an image lazily (header only) after the format, pixel and memory checks.

    Args:
        source: encoded bytes, a path, or a binary file object.
        max_pixels: refuse images with more pixels (Pillow's ``MAX_IMAGE_PIXELS`` also applies).
        max_decoded_bytes: refuse images whose decoded frame would take more bytes (None: no limit).
        formats: Pillow format ids to try; a subset of :data:`ALLOWED_FORMATS` in practice.
            EPS/PS/PDF raise ValueError.

    Returns:
        A PIL image whose pixels are not decoded yet (use it as a context manager, ``load()``,
        ``draft()``...); only its first frame is ever meant to be used.

    Raises:
        ImageError: empty, not an allowed format, too many pixels, over the memory budget, or a
            header Pillow cannot parse.
    """
    fmts = _check_formats(formats)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError("empty", "no image bytes (empty body)")
        fp: IO[bytes] | str | os.PathLike = io.BytesIO(source)
        head = bytes(source[:32])
    else:
        fp = source
        head = b""
    cap = max_pixels if not Image.MAX_IMAGE_PIXELS else min(max_pixels, Image.MAX_IMAGE_PIXELS)
    try:
        if threading.current_thread() is threading.main_thread():
            # warnings filters are process-global and catch_warnings is not thread-safe: other
            # threads rely on the explicit cap below, which is never above Pillow's threshold
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp, formats=fmts)
        else:
            img = Image.open(fp, formats=fmts)
    except Image.UnidentifiedImageError:
        what = sniff(head or _head_of(fp))
        raise ImageError("not_image", (f"{what} data, not an allowed image format" if what else
                                       "not an image in an allowed format") +
                         f" ({', '.join(fmts)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_many_pixels", f"decompression bomb refused: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ImageError("undecodable", f"unreadable image header ({type(e).__name__}: {str(e)[:120]})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise ImageError("undecodable", f"{img.format} header gives an empty size {w}x{h}")
    if w * h > cap:
        img.close()
        raise ImageError("too_many_pixels", f"{w}x{h} = {w * h} pixels, over the cap of {cap}")
    if max_decoded_bytes is not None:
        cost = decoded_bytes(img)
        if cost > max_decoded_bytes:
            img.close()
            raise ImageError("over_memory_budget", f"{w}x{h} {img.mode} {img.format} decodes to {cost} bytes, "
                                                   f"over the budget of {max_decoded_bytes} bytes per image")
    return img


def draft_size(size: tuple[int, int], need: tuple[int, int] | None) -> tuple[int, int] | None:
    """The draft request for an image of ``size`` when at least ``need`` (w, h) is needed."""
    if need is None:
        return None
    nw, nh = max(1, need[0]), max(1, need[1])
    return (nw, nh) if size[0] >= 2 * nw and size[1] >= 2 * nh else None


def decode(source: Source, *, need: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
           max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
           formats: tuple[str, ...] | list[str] = ALLOWED_FORMATS) -> Image.Image:
    """Open and decode the first frame, in the file's own mode (no conversion).

    Args:
        need: the smallest (width, height) the caller will use; a JPEG then decodes by DCT
            scaling at 1/2, 1/4 or 1/8 size as long as both sides stay at least this large.

    Raises:
        ImageError: as :func:`open_image`, or ``undecodable`` when the pixel data is corrupt
            or truncated.
    """
    img = open_image(source, max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes, formats=formats)
    return load_frame(img, need)


def load_frame(img: Image.Image, need: tuple[int, int] | None = None) -> Image.Image:
    """Decode the first frame of an image :func:`open_image` returned (draft mode as in :func:`decode`).

    Raises:
        ImageError: ``undecodable`` when the pixel data is corrupt or truncated.
    """
    try:
        req = draft_size(img.size, need)
        if req is not None and img.format in ("JPEG", "MPO"):
            img.draft(img.mode if img.mode in ("RGB", "L") else None, req)
        img.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is this image's reason
        img.close()
        raise ImageError("undecodable", f"{img.format} data does not decode ({type(e).__name__}: "
                                        f"{str(e)[:120]})") from None
    return img


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def flatten(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB (or L for greyscale without alpha), alpha composited on ``background`` in uint8.

    Integer arithmetic on Pillow's own buffers: one extra frame at most, never floats.
    """
    if img.mode in ("RGB", "L"):
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _sixteen_to_l(img)
    if not has_alpha(img):
        return img.convert("RGB")
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    bg = Image.new("RGB", rgba.size, background)
    bg.paste(rgba, (0, 0), rgba)  # alpha blend in uint8 (Pillow's paste with a mask)
    return bg


def _sixteen_to_l(img: Image.Image) -> Image.Image:
    import numpy as np

    arr = np.asarray(img)
    return Image.fromarray((arr >> 8).astype(np.uint8), "L")


def decode_rgb(source: Source, *, need: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
               formats: tuple[str, ...] | list[str] = ALLOWED_FORMATS) -> Image.Image:
    """:func:`decode`, then RGB with any alpha flattened on white (uint8).

    Raises:
        ImageError: as :func:`decode`.
    """
    img = decode(source, need=need, max_pixels=max_pixels, max_decoded_bytes=max_decoded_bytes, formats=formats)
    try:
        out = flatten(img)
        return out if out.mode == "RGB" else out.convert("RGB")
    except Exception as e:  # noqa: BLE001
        raise ImageError("undecodable",
                         f"{img.format} {img.mode} does not convert to RGB ({type(e).__name__})") from None
