"""Secure sample decoding: images through Pillow (JPEG/PNG/WebP only) and text; nothing else.

No pickle, no ``.pth``, no ``pipe:``: the stream only ever hands bytes to Pillow with an
explicit format allow-list and a pixel cap, and captions come from the Parquet metadata.
A member that fails to decode raises :class:`CorruptSample`; the stream skips it and
counts the reason.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from curation.io.images import ImageError, open_image

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 64_000_000


class CorruptSample(Exception):
    """A member's bytes are not a decodable, allowed image (``reason`` is a short tag)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes into an RGB PIL image.

    Raises:
        CorruptSample: empty, unknown/disallowed format, too many pixels, or truncated data.
    """
    if not data:
        raise CorruptSample("empty", "member has no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = open_image(data, max_pixels=max_pixels, formats=ALLOWED_FORMATS)
            img.draft("RGB", img.size)  # JPEG: decode at full size straight to RGB
            img = img.convert("RGB")
    except ImageError as e:
        reason = {"too_many_pixels": "too_large", "over_memory_budget": "too_large", "empty": "empty",
                  "not_image": "not_an_image"}.get(e.reason, "undecodable")
        raise CorruptSample(reason, str(e)) from None
    except Image.UnidentifiedImageError as e:
        raise CorruptSample("not_an_image", str(e)) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise CorruptSample("undecodable", f"{type(e).__name__}: {e}") from None
    return img


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """The default transform: an RGB PIL image as a ``uint8`` tensor of shape ``(3, H, W)``."""
    arr = np.array(img, dtype=np.uint8)  # one copy, writable (torch shares it)
    return torch.from_numpy(arr).permute(2, 0, 1)


def identity(img: Image.Image) -> Image.Image:
    """A no-op transform (benchmarks, or when the collate function handles PIL images)."""
    return img
