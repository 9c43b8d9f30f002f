"""Blurring face boxes in an image, as DataComp's resharder does with its ``face_bboxes`` column.

Each box is grown by a margin, the region is replaced by a strong Gaussian blur of itself, and
the edge is feathered so no hard seam marks it; pixels farther than the margin plus feather
from every box are left exactly as decoded. The image is re-encoded in its own format (JPEG at
``quality``), so outside the boxes it differs from the input only by that re-encode.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

MARGIN = 0.1     # grow each box by this fraction of its larger side on every edge
STRENGTH = 0.25  # Gaussian radius as a fraction of the box's larger side


def blur_boxes(img: Image.Image, boxes: list[list[float]]) -> Image.Image:
    """``img`` (RGB) with every normalised ``[x0, y0, x1, y1]`` box blurred."""
    img = img.convert("RGB")
    if not boxes:
        return img
    w, h = img.size
    out = np.asarray(img, dtype=np.float32).copy()
    for x0, y0, x1, y1 in boxes:
        bw, bh = (x1 - x0) * w, (y1 - y0) * h
        side = max(bw, bh, 1.0)
        pad = MARGIN * side
        left, t = int(max(0, x0 * w - pad)), int(max(0, y0 * h - pad))
        r, b = int(min(w, np.ceil(x1 * w + pad))), int(min(h, np.ceil(y1 * h + pad)))
        if r <= left or b <= t:
            continue
        region = img.crop((left, t, r, b))
        blurred = np.asarray(region.filter(ImageFilter.GaussianBlur(radius=max(2.0, STRENGTH * side))),
                             dtype=np.float32)
        # feathered mask: 1 inside the (padded) box, ramping to 0 over the outer pad
        yy, xx = np.mgrid[t:b, left:r].astype(np.float32)
        dx = np.maximum(np.maximum(x0 * w - xx, xx - x1 * w), 0)
        dy = np.maximum(np.maximum(y0 * h - yy, yy - y1 * h), 0)
        mask = np.clip(1.0 - np.hypot(dx, dy) / max(pad, 1.0), 0.0, 1.0)[..., None]
        out[t:b, left:r] = mask * blurred + (1 - mask) * out[t:b, left:r]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def blur_image_bytes(data: bytes, boxes: list[list[float]], ext: str, quality: int = 95) -> bytes:
    """Encoded image bytes with the boxes blurred, re-encoded as ``ext`` (unchanged when no boxes)."""
    if not boxes:
        return data
    from curation.io.images import decode_rgb

    with decode_rgb(data) as im:
        out = blur_boxes(im, boxes)
    buf = io.BytesIO()
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    out.save(buf, fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def blur_row(row: dict, data: bytes, quality: int = 95) -> bytes:
    """The image of one metadata row with its ``face_bboxes`` blurred (reshard's ``--blur-faces`` hook)."""
    return blur_image_bytes(data, row.get("face_bboxes") or [], row.get("image_ext") or "jpg", quality)


def check_blur_columns(columns: list[str], where: str) -> None:
    """``--blur-faces`` needs the faces stage's boxes: refuse before anything is written."""
    if "face_bboxes" not in columns:
        from curation.errors import ConfigError

        raise ConfigError(f"reshard.blur_faces: {where} has no face_bboxes column; run `curate faces` first")
