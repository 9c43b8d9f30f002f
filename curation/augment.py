"""Image symmetries used as augmentation: at train time (a random one per image) and at
test time (the average embedding over several views).

The 8 symmetries of the square (flips and transposes) preserve what a caption of the
synthetic corpus says: colour, shape, count and background have no orientation. Use them
only for captions that say nothing about left/right or up/down.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where a tensor is handled: configs use Views without it
    import torch

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
