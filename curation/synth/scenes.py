"""The scene vocabulary of the synthetic corpus: what can appear, when, and how it is drawn.

A scene is ``count`` shapes of one colour on a background colour, e.g. "two red circles on a
blue background" (class label "red circle"). Time slices drift: colours and shapes rise and
fall in frequency, and some appear only in later slices, as new concepts do on the real web.
Everything is a pure function of its arguments (and a seed), so corpora are reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_SLICES: tuple[str, ...] = ("2023", "2024", "2025")

# name -> (rgb, first slice position it appears at in [0, 1], trend of its frequency over time)
COLORS: dict[str, tuple[tuple[int, int, int], float, float]] = {
    "red": ((215, 35, 35), 0.0, -0.8),
    "green": ((35, 160, 60), 0.0, 0.0),
    "blue": ((35, 75, 215), 0.0, 0.3),
    "yellow": ((240, 205, 30), 0.0, -0.5),
    "orange": ((245, 135, 25), 0.0, 0.0),
    "black": ((25, 25, 25), 0.0, -0.3),
    "white": ((245, 245, 245), 0.0, 0.0),
    "purple": ((135, 55, 185), 0.5, 0.8),
    "pink": ((240, 115, 175), 0.5, 0.5),
    "cyan": ((30, 200, 210), 1.0, 1.0),
}
# name -> (plural, first slice position, trend)
SHAPES: dict[str, tuple[str, float, float]] = {
    "circle": ("circles", 0.0, -0.7),
    "square": ("squares", 0.0, 0.0),
    "triangle": ("triangles", 0.0, 0.2),
    "diamond": ("diamonds", 0.0, -0.3),
    "star": ("stars", 0.5, 0.8),
    "hexagon": ("hexagons", 0.5, 0.4),
    "cross": ("crosses", 1.0, 1.0),
}
BACKGROUNDS: tuple[str, ...] = ("white", "black", "blue", "green", "yellow", "pink", "orange")
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Scene:
    """One drawable scene; ``caption`` is its true description."""

    color: str
    shape: str
    background: str
    count: int

    @property
    def class_label(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def caption(self) -> str:
        noun = self.shape if self.count == 1 else SHAPES[self.shape][0]
        return f"{COUNT_WORDS[self.count]} {self.color} {noun} on a {self.background} background"


def slice_position(index: int, num_slices: int) -> float:
    """Where slice ``index`` sits on the drift timeline, in [0, 1]."""
    return index / (num_slices - 1) if num_slices > 1 else 0.0


def _weights(table: dict, pos: float) -> tuple[list[str], np.ndarray]:
    names, weights = [], []
    for name, (_, intro, trend) in table.items():
        if pos + 1e-9 >= intro:  # not invented yet before its intro position
            names.append(name)
            weights.append(max(0.15, 1.0 + trend * (pos - 0.5) * 1.6))
    w = np.asarray(weights, dtype=np.float64)
    return names, w / w.sum()


def sample_scene(rng: np.random.Generator, pos: float) -> Scene:
    """Draw a scene from the mix of the slice at timeline position ``pos``."""
    colors, cw = _weights(COLORS, pos)
    shapes, sw = _weights(SHAPES, pos)
    color = colors[rng.choice(len(colors), p=cw)]
    shape = shapes[rng.choice(len(shapes), p=sw)]
    backgrounds = [b for b in BACKGROUNDS if b != color]
    background = backgrounds[rng.integers(len(backgrounds))]
    count = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
    return Scene(color, shape, background, count)


def _slice_positions(slices: Iterable[str | int] | None, all_slices: Sequence[str]) -> list[float]:
    if slices is None:
        return [slice_position(i, len(all_slices)) for i in range(len(all_slices))]
    out = []
    for s in slices:
        idx = s if isinstance(s, int) else list(all_slices).index(str(s))
        out.append(slice_position(idx, len(all_slices)))
    return out


def scenes_in(slices: Iterable[str | int] | None = None,
              all_slices: Sequence[str] = DEFAULT_SLICES) -> list[Scene]:
    """Every scene that can occur in ``slices`` (names or indexes of ``all_slices``; all if None)."""
    positions = _slice_positions(slices, all_slices)
    latest = max(positions)
    colors = [c for c, (_, intro, _) in COLORS.items() if latest + 1e-9 >= intro]
    shapes = [s for s, (_, intro, _) in SHAPES.items() if latest + 1e-9 >= intro]
    return [Scene(c, s, b, n) for c in colors for s in shapes for b in BACKGROUNDS if b != c
            for n in COUNT_WORDS]


def caption_bank(slices: Iterable[str | int] | None = None,
                 all_slices: Sequence[str] = DEFAULT_SLICES) -> list[str]:
    """Every true caption the generator can produce in ``slices`` (sorted, unique).

    A complete candidate bank for retrieval captioning: the true caption of every corpus,
    seed and eval record is in ``caption_bank()``.
    """
    return sorted({s.caption for s in scenes_in(slices, all_slices)})


def class_labels(slices: Iterable[str | int] | None = None,
                 all_slices: Sequence[str] = DEFAULT_SLICES) -> list[str]:
    """Every ``class_label`` ("red circle", ...) that can occur in ``slices`` (sorted)."""
    return sorted({s.class_label for s in scenes_in(slices, all_slices)})


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if shape == "star":
        pts = [(r if i % 2 == 0 else r * 0.45, rot + i * math.pi / 5) for i in range(10)]
    elif shape == "diamond":  # a rhombus: a rotated square would be a square
        pts = [(r * (1.0 if i % 2 == 0 else 0.55), rot + i * math.pi / 2) for i in range(4)]
    elif shape == "cross":
        a, b = r, r * 0.35
        raw = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b),
               (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in raw]
    else:
        sides = {"triangle": 3, "square": 4, "hexagon": 6}[shape]
        offset = math.pi / 4 if shape == "square" else 0.0
        pts = [(r, rot + offset + i * 2 * math.pi / sides) for i in range(sides)]
    return [(cx + d * math.cos(t), cy + d * math.sin(t)) for d, t in pts]


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    def ch(v: int) -> int:
        return int(np.clip(v * f if f < 1 else v + (255 - v) * (f - 1), 0, 255))

    return ch(rgb[0]), ch(rgb[1]), ch(rgb[2])


def _background(bg: tuple[int, int, int], w: int, h: int, rng: np.random.Generator) -> Image.Image:
    # A soft linear gradient in a random direction: real photos are never flat, and the
    # low-frequency variety keeps unrelated scenes apart in perceptual-hash space.
    # Computed on a coarse grid and upsampled (a linear ramp survives bilinear resizing).
    angle = rng.uniform(0, 2 * math.pi)
    lo, hi = rng.uniform(0.7, 0.9), rng.uniform(1.05, 1.3)
    gw, gh = max(2, min(w, 32)), max(2, min(h, 32))
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    t = (xs / (gw - 1) - 0.5) * w * math.cos(angle) + (ys / (gh - 1) - 0.5) * h * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    a, b = np.asarray(_shade(bg, lo), np.float32), np.asarray(_shade(bg, hi), np.float32)
    arr = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    small = Image.fromarray(np.round(arr).astype(np.uint8), "RGB")
    return small.resize((w, h), Image.Resampling.BILINEAR)


def render_scene(color: str, shape: str, background: str, count: int = 1, *,
                 width: int = 256, height: int = 256, seed: int = 0) -> Image.Image:
    """Draw a scene as an RGB image; the same arguments always give the same pixels.

    Args:
        color: a key of ``COLORS`` (the shapes' colour).
        shape: a key of ``SHAPES``.
        background: a key of ``COLORS`` (the background's base colour).
        count: how many shapes (1-4), spread out so they rarely overlap.
        width, height: image size in pixels (any size from 8 px up).
        seed: picks layout, sizes, rotations and the background gradient.
    """
    if color not in COLORS or background not in COLORS or shape not in SHAPES:
        raise ValueError(f"unknown scene part: {color!r} {shape!r} on {background!r}")
    rng = np.random.default_rng([int(seed), 7919])
    img = _background(COLORS[background][0], width, height, rng)
    draw = ImageDraw.Draw(img)
    m = min(width, height)
    r = m * rng.uniform(0.18, 0.25) * (1.0, 0.85, 0.75, 0.7)[count - 1]
    centers: list[tuple[float, float]] = []
    for _ in range(count):
        for _attempt in range(60):  # rejection-sample a non-overlapping centre
            cx, cy = rng.uniform(r * 1.1, width - r * 1.1), rng.uniform(r * 1.1, height - r * 1.1)
            if all(math.hypot(cx - x, cy - y) > 2.15 * r for x, y in centers):
                break
        centers.append((cx, cy))
    fill = COLORS[color][0]
    for cx, cy in centers:
        rot = rng.uniform(0, 2 * math.pi)
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(shape, cx, cy, r, rot), fill=fill)
    return img
