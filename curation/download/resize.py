"""Check, resize and encode one downloaded image: img2dataset's ``Resizer`` semantics on Pillow.

Same outputs as img2dataset's resizer in geometry: resize modes ``no``, ``keep_ratio``,
``center_crop``, ``border`` (white padding, centred), ``keep_ratio_largest``;
``resize_only_if_bigger``; area averaging when shrinking and Lanczos when enlarging; new sides
``max(1, round(side * scale))``; the ``min_image_size`` / ``max_aspect_ratio`` checks on the
original size. What differs is the cost and the safety:

* the bytes are opened by :func:`curation.io.images.open_image` (format allow-list, pixel
  cap, memory budget checked on the header before any pixel is decoded);
* a JPEG decodes in draft mode (DCT scaling by 1/2..1/8) when the output needs no more than
  that, and the resize then starts from the smaller frame;
* alpha is handled in uint8: the frame is resized premultiplied (Pillow's ``RGBa``) and only
  the small result is composited on white, so an 8000x8000 RGBA PNG costs about twice its
  decoded 256 MB, not img2dataset's float64 matting (4-5 GB);
* one decode serves the resize and the pHash.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from curation.io.images import ImageError, load_frame, open_image

_ENCODE = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_DOWN = Image.Resampling.BOX       # = OpenCV INTER_AREA (exact area coverage), img2dataset's downscale
_UP = Image.Resampling.LANCZOS     # img2dataset's upscale


class Rejected(Exception):
    """An image the settings refuse (``status``: too_small, bad_aspect_ratio, ...)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Resized:
    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    frame: Image.Image   # the decoded frame (possibly at draft scale)
    scaled: Image.Image  # after the resize and alpha flattening, before padding or cropping


class Resizer:
    """Settings of one download run; ``resizer(raw)`` -> :class:`Resized`.

    Raises (from ``__call__``): :class:`~curation.io.images.ImageError` for bytes that are
    not an allowed, affordable, decodable image; :class:`Rejected` for images the size
    checks refuse.
    """

    def __init__(self, *, image_size: int, resize_mode: str, resize_only_if_bigger: bool, encode_format: str,
                 encode_quality: int, min_image_size: int, max_aspect_ratio: float | None, max_pixels: int,
                 max_decoded_bytes: int | None):
        if encode_format not in _ENCODE:
            raise ValueError(f"encode_format: {encode_format!r} is not jpg, png or webp")
        self.size, self.mode, self.only_bigger = image_size, resize_mode, resize_only_if_bigger
        self.format, self.quality = _ENCODE[encode_format], encode_quality
        self.min_size, self.max_aspect = min_image_size, max_aspect_ratio
        self.max_pixels, self.max_decoded_bytes = max_pixels, max_decoded_bytes

    # -- geometry -------------------------------------------------------------------------
    def target(self, w: int, h: int) -> tuple[int, int] | None:
        """(width, height) after resizing, before padding/cropping; None when not resized."""
        if self.mode in ("keep_ratio", "center_crop"):
            side = min(w, h)
        elif self.mode in ("border", "keep_ratio_largest"):
            side = max(w, h)
        else:
            return None
        if self.only_bigger and side <= self.size:
            return None
        scale = self.size / side
        if scale == 1.0:
            return (w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def _check(self, w: int, h: int) -> None:
        if min(w, h) < self.min_size:
            raise Rejected("too_small", f"{w}x{h} is under the minimum side of {self.min_size}")
        if self.max_aspect and max(w, h) / min(w, h) > self.max_aspect:
            raise Rejected("bad_aspect_ratio", f"{w}x{h} has an aspect ratio over {self.max_aspect}")

    # -- the work -------------------------------------------------------------------------
    def __call__(self, raw: bytes) -> Resized:
        """Decode ``raw`` (:func:`decode_for`) and :meth:`resize` it."""
        return self.resize(decode_for(raw, self))

    def resize(self, frame: Image.Image) -> Resized:
        """Check, resize and encode a frame :func:`decode_for` returned (the frame is not modified)."""
        ow, oh = frame.info["curation_original_size"]
        self._check(ow, oh)
        tgt = self.target(ow, oh)
        img = frame
        premultiplied = False
        if img.mode not in ("RGB", "L"):
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA").convert("RGBa") if img.mode != "RGBA" else img.convert("RGBa")
                premultiplied = True
            elif img.mode.startswith("I;16"):
                img = _sixteen_to_l(img)
            else:
                img = img.convert("RGB")
        if tgt is not None and tgt != img.size:
            down = tgt[0] * tgt[1] < ow * oh
            img = img.resize(tgt, _DOWN if down else _UP)
        if premultiplied:
            img = _composite_white(img)
        scaled = img
        if tgt is not None:
            img = self._pad_or_crop(img)
        buf = io.BytesIO()
        opts = {"quality": self.quality} if self.format in ("JPEG", "WEBP") else {"compress_level": self.quality}
        img.save(buf, self.format, **opts)
        return Resized(buf.getvalue(), img.width, img.height, ow, oh, frame, scaled)

    def _pad_or_crop(self, img: Image.Image) -> Image.Image:
        s = self.size
        w, h = img.size
        if self.mode == "border" and (w < s or h < s):
            cw, ch = max(w, s), max(h, s)
            left, top = int((cw - w) / 2.0), int((ch - h) / 2.0)
            out = Image.new(img.mode, (cw, ch), 255 if img.mode == "L" else (255, 255, 255))
            out.paste(img, (left, top))
            return out
        if self.mode == "center_crop":
            if w < s or h < s:
                raise Rejected("too_small", f"{w}x{h} is smaller than the {s}x{s} crop")
            left, top = (w - s) // 2, (h - s) // 2
            return img.crop((left, top, left + s, top + s))
        return img


# The smallest short side a frame is decoded at: the pHash is taken from it (PDQ too, but
# curation.blocklist.pdq evaluates PDQ's full-resolution front end on any frame). Measured, exact
# Lanczos pHash of a JPEG draft frame vs the full decode (phash_bytes): on photos, 0.1-0.3 bits
# mean and at most 2-4 down to 120 px frames; on the synthetic corpus's flat scenes (upscaled 2x
# so that drafts happen), 128 px frames moved images up to 10 bits, 160-192 px frames at most 2.
HASH_MIN_SIDE = 192


def decode_for(raw: bytes, r: Resizer) -> Image.Image:
    """Decode ``raw`` for ``r``'s output: the header checks, then a draft-mode decode no smaller
    than the resize target, nor than :data:`HASH_MIN_SIDE` on its short side (the original size
    is kept in ``info["curation_original_size"]``).

    Raises:
        ImageError: not an allowed, affordable, decodable image.
    """
    im = open_image(raw, max_pixels=r.max_pixels, max_decoded_bytes=r.max_decoded_bytes)
    size = im.size
    tgt = r.target(*size)
    if tgt is not None and min(tgt) < HASH_MIN_SIDE:
        # small outputs still decode at least this large: a draft far below it moves the pHash
        # (a draft to 64 px moved near-duplicate pairs of the demo corpus 8 bits apart)
        f = HASH_MIN_SIDE / max(1, min(tgt))
        tgt = (min(size[0], math.ceil(tgt[0] * f)), min(size[1], math.ceil(tgt[1] * f)))
    frame = load_frame(im, tgt if tgt is not None and tgt[0] * tgt[1] < size[0] * size[1] else None)
    frame.info["curation_original_size"] = size
    return frame


def _sixteen_to_l(img: Image.Image) -> Image.Image:
    import numpy as np

    return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8), "L")


def _composite_white(pm: Image.Image) -> Image.Image:
    """A premultiplied ``RGBa`` frame over white, exactly, in uint8: rgb' = rgb*a/255 + 255 - a."""
    import numpy as np

    arr = np.asarray(pm)  # (h, w, 4) uint8, premultiplied
    out = arr[..., :3].astype(np.uint16) + (255 - arr[..., 3:4]).astype(np.uint16)
    return Image.fromarray(np.minimum(out, 255).astype(np.uint8), "RGB")


__all__ = ["Resizer", "Resized", "Rejected", "ImageError", "decode_for"]
