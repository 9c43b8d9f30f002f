"""Thumbnails inlined into the report as ``data:`` URIs.

Images are read by byte range (``tar_offset``/``tar_size``), so only the shown samples
are fetched, whatever the dataset's size. JPEG draft mode decodes large photos at a
fraction of their size. An image that cannot be decoded yields None and the report
shows a text placeholder instead: a broken ``<img>`` would hide the problem.
"""
from __future__ import annotations

import base64
import io
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from curation.errors import DatasetError
from curation.io import Dataset
from curation.io.images import open_image

THUMB_PX = 160
# A report must not be the thing that decodes a decompression bomb at full size.
_MAX_PIXELS = 64_000_000


def thumbnail_uri(data: bytes, size: int = THUMB_PX) -> str | None:
    """A JPEG (or PNG, for images with transparency) thumbnail as a data URI, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = open_image(data, max_pixels=_MAX_PIXELS)  # ImageError (a ValueError) -> None
            img.draft("RGB", (size, size))
            img.thumbnail((size, size))
            has_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
            img = img.convert("RGBA" if has_alpha else "RGB")
            buf = io.BytesIO()
            if has_alpha:
                img.save(buf, format="PNG", optimize=True)
                return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            img.save(buf, format="JPEG", quality=85)
            return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def thumbnails(ds: Dataset, rows: list[dict[str, Any]], size: int = THUMB_PX) -> list[str | None]:
    """Thumbnails of ``rows`` (metadata dicts), None where a row has no readable image."""
    with_image = [i for i, r in enumerate(rows) if r.get("tar_offset") is not None and r.get("tar_size")]
    out: list[str | None] = [None] * len(rows)
    if not with_image:
        return out
    try:
        blobs = ds.read_images([rows[i] for i in with_image])
    except (OSError, DatasetError):
        # One unreadable range should not sink the whole page: fall back to one by one.
        blobs = []
        for i in with_image:
            try:
                blobs.append(ds.read_image(rows[i]))
            except (OSError, DatasetError):
                blobs.append(b"")
    for i, blob in zip(with_image, blobs):
        out[i] = thumbnail_uri(blob, size) if blob else None
    return out
