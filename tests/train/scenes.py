"""Tiny drawn scenes for training tests: colour x shape on a background, captions say both."""
from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ["circle", "square", "triangle"]
BACKGROUNDS = [(250, 250, 250), (40, 40, 40), (140, 140, 140)]


def draw(colour: str, shape: str, rng: random.Random, size: int = 32) -> bytes:
    """One PNG: a ``colour`` ``shape`` of random size/position on a random grey background."""
    im = Image.new("RGB", (size, size), rng.choice(BACKGROUNDS))
    d = ImageDraw.Draw(im)
    r = rng.randint(size // 4, size // 2 - 2)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    box = [cx - r, cy - r, cx + r, cy + r]
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def scenes(n: int, seed: int = 0, colours=None, shapes=None) -> list[dict]:
    """``n`` rows of ``{"image", "caption", "class_label", "uid"}``."""
    rng = random.Random(seed)
    colours, shapes = colours or list(COLOURS), shapes or SHAPES
    rows = []
    for i in range(n):
        c, s = rng.choice(colours), rng.choice(shapes)
        rows.append({"image": draw(c, s, rng), "caption": f"a {c} {s}", "class_label": f"{c} {s}",
                     "uid": f"{seed}-{i}"})
    return rows


SLICE_COLOURS = {"s1": ["red", "green"], "s2": ["blue", "yellow"], "s3": ["red", "blue"]}


def write_sliced(path: str, per_slice: int, seed: int = 0) -> str:
    """A Parquet of drawn scenes with a ``slice`` column; each slice draws its own colours (drift)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for k, (name, colours) in enumerate(SLICE_COLOURS.items()):
        for r in scenes(per_slice, seed=seed * 10 + k, colours=colours):
            rows.append({**r, "uid": f"{name}-{r['uid']}", "slice": name})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_sliced_dataset(root: str, per_slice: int, seed: int = 0, samples_per_shard: int = 40):
    """The same drawn scenes as :func:`write_sliced`, as a curated dataset (``slice``,
    ``class_label`` metadata columns) written with the real ``DatasetWriter``."""
    from curation.train.data import write_pairs_dataset

    rows = []
    for k, (name, colours) in enumerate(SLICE_COLOURS.items()):
        for r in scenes(per_slice, seed=seed * 10 + k, colours=colours):
            rows.append({**r, "uid": f"{name}-{r['uid']}", "slice": name})
    return write_pairs_dataset(rows, root, samples_per_shard=samples_per_shard, columns=["slice", "class_label"])
