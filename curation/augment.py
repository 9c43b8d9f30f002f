"""Image symmetries used as augmentation: at train time (a random one per image) and at
test time (the average embedding over several views); and re-served copies of clean training
images (:func:`web_copy`), so a model trained on them meets crawled images as it learned them.

The 8 symmetries of the square (flips and transposes) preserve what a caption of the
synthetic corpus says: colour, shape, count and background have no orientation. Use them
only for captions that say nothing about left/right or up/down.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where a tensor is handled: configs use Views without it
    import numpy as np
    import torch
    from PIL import Image

Views = Literal["none", "flip", "dihedral"]


def random_dihedral(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of ``[B, C, H, W]`` under one of the 8 symmetries of the square, drawn from
    ``gen`` (a random horizontal flip, vertical flip and, for square images, transpose)."""
    import torch

    for dims in ((3,), (2,)):
        pick = torch.rand(images.shape[0], generator=gen) < 0.5
        images = torch.where(pick[:, None, None, None], images.flip(dims), images)
    if images.shape[2] == images.shape[3]:
        pick = torch.rand(images.shape[0], generator=gen) < 0.5
        images = torch.where(pick[:, None, None, None], images.transpose(2, 3), images)
    return images


# web_copy's draws: the share of the area kept, the aspect ratio of the crop, the JPEG quality
WEB_AREA = (0.7, 1.0)
WEB_ASPECT = (3 / 4, 4 / 3)
WEB_QUALITY = (40, 90)


def web_copy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``img`` as a crawl serves it and a downloader reads it back: a random crop of
    :data:`WEB_AREA` of the area at an aspect ratio in :data:`WEB_ASPECT` (log-uniform),
    resized back to ``img``'s size, then encoded and decoded as JPEG at a quality in
    :data:`WEB_QUALITY`. Same ``rng`` state, same copy.

    Clean seed pairs are often cleaner than the pool they judge (lossless, whole pictures);
    the pool's images are cropped, recompressed and rescaled. Training on both closes that
    gap: on the demo's downloaded images one copy per seed pair lifted exact caption retrieval
    from 0.62 to 0.70 (bench/RESULTS.md "Demo").
    """
    import io
    import math

    from PIL import Image

    from curation.io.images import open_image

    img = img.convert("RGB")
    w, h = img.size
    area = rng.uniform(*WEB_AREA)
    aspect = math.exp(rng.uniform(math.log(WEB_ASPECT[0]), math.log(WEB_ASPECT[1])))
    cw = max(1, min(w, int(round(w * math.sqrt(area * aspect)))))
    ch = max(1, min(h, int(round(h * math.sqrt(area / aspect)))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(WEB_QUALITY[0], WEB_QUALITY[1] + 1)))
    return open_image(buf.getvalue()).convert("RGB")


def views(images: torch.Tensor, kind: Views) -> list[torch.Tensor]:
    """The test-time views of ``[B, C, H, W]``: the images themselves first, then their
    horizontal flip (``flip``) or all 8 symmetries of the square (``dihedral``)."""
    if kind == "none":
        return [images]
    out = [images, images.flip(3)]
    if kind == "dihedral":
        out += [images.flip(2), images.flip(2).flip(3)]
        if images.shape[2] == images.shape[3]:
            out += [v.transpose(2, 3) for v in out]
    return out
