"""The watermark noise kind: a stock-photo stamp (translucent diagonal bars and a name banner).

Real crawls are full of stock previews whose watermark survives resizing as a strong texture:
translucent diagonal bars across the whole picture and a banner with the agency's name. The stamp here is
drawn the same way and strongly enough to survive the demo's 64 px download and the filter
CLIP's 32 px input, so a probe on stored embeddings can learn it (``train-head``).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

STAMP_TEXTS = ("© STOCK", "PREVIEW", "© PHOTOBANK", "SAMPLE")


def stamp(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``img`` with a watermark: translucent diagonal bars and a name banner, drawn from ``rng``."""
    w, h = img.size
    m = min(w, h)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    period = m * rng.uniform(0.30, 0.38)
    band = max(2.0, m * rng.uniform(0.08, 0.10))
    shift = rng.uniform(0, period)
    sign = 1 if rng.random() < 0.5 else -1
    # white bars on dark pictures, dark bars on light ones (a white stamp vanishes on white)
    light = float(np.asarray(img.convert("L"), dtype=np.float32).mean()) > 165
    fill = (30, 30, 30, int(rng.integers(110, 141))) if light else (255, 255, 255, int(rng.integers(150, 181)))
    k = -(w + h)
    while k < w + h:  # bands along x - sign*y = k (45 degrees)
        x0 = k + shift
        pts = [(x0, 0), (x0 + band, 0), (x0 + band + sign * h, h), (x0 + sign * h, h)]
        d.polygon(pts, fill=fill)
        k += period
    # the agency's banner: a strip along the top or bottom edge with its name in it
    # (inside the central square, so a center crop to a training size keeps all of it)
    bh = int(round(m * rng.uniform(0.17, 0.22)))
    top = (h - m) // 2
    y0 = top if rng.random() < 0.5 else top + m - bh
    bar = (20, 20, 20, 215) if not light else (250, 250, 250, 225)
    ink = (255, 255, 255, 255) if not light else (20, 20, 20, 255)
    d.rectangle([0, y0, w, y0 + bh], fill=bar)
    font = ImageFont.load_default(size=max(8, int(bh * 0.6)))
    text = STAMP_TEXTS[int(rng.integers(len(STAMP_TEXTS)))]
    d.text((w / 2, y0 + bh / 2), text, font=font, anchor="mm", fill=ink)
    return Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
