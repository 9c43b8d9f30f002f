"""Planning a synthetic crawl: which record gets which scene, slice, size, format and noise.

Planning is separate from drawing so the assignment of faults (exact counts per kind) is
easy to read and to check. Every random choice comes from a named stream derived from the
seed, so adding a stream never changes what another stream draws.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from curation.synth.noise import CAPTION_RATES, DUP_RATES, FETCH_RATES, IMAGE_RATES, STAMP_RATES, exact_counts
from curation.synth.scenes import Scene, sample_scene, slice_position

# append only: a new stream never shifts others
STREAMS = ("slices", "faults", "scenes", "sizes", "dups", "order", "captions", "render",
           "server", "seedset", "watermark", "seedset_watermark", "seedset_captions")
# Fetch faults whose URL never yields a decodable image, so nothing is drawn for them.
NO_IMAGE = {"http_404", "http_500", "not_image", "too_many_pixels"}


def rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per named stream."""
    return {name: np.random.default_rng([int(seed), i]) for i, name in enumerate(STREAMS)}


@dataclass
class Record:
    """One URL of the crawl (an original scene or a duplicate of one)."""

    index: int                    # position in the plan (originals first, then duplicates)
    scene: Scene
    slice_index: int
    width: int = 0
    height: int = 0
    fmt: str = "jpeg"
    quality: int = 90
    fetch: str | None = None      # a FETCH_RATES kind
    image_kind: str | None = None  # "tiny" | "extreme_aspect"
    dup_kind: str | None = None   # "exact" | "near"
    dup_of: int | None = None     # index of the original
    caption_noise: str | None = None
    watermark: bool = False        # a stock-photo stamp is drawn over the image
    noise: list[str] = field(default_factory=list)
    uid: str = ""                 # set once the output order is fixed

    @property
    def has_image(self) -> bool:
        return self.fetch not in NO_IMAGE


def uid_for(seed: int, position: int) -> str:
    """DataComp-style 32-hex uid, stable for (seed, position)."""
    return hashlib.md5(f"curation-synth:{seed}:{position}".encode()).hexdigest()


def _size(r: np.random.Generator, kind: str | None) -> tuple[int, int]:
    if kind == "tiny":
        return int(r.integers(16, 57)), int(r.integers(16, 57))
    if kind == "extreme_aspect":
        long = int(r.integers(720, 961))
        short = int(round(long / r.uniform(4.0, 6.0)))
        return (long, short) if r.random() < 0.5 else (short, long)
    return int(r.integers(224, 321)), int(r.integers(224, 321))


def _format(r: np.random.Generator, rec: Record) -> tuple[str, int]:
    if rec.image_kind == "tiny":
        return "jpeg", int(r.integers(80, 96))
    u = r.random()
    fmt = "jpeg" if u < 0.8 else "png" if u < 0.9 else "webp"
    return fmt, int(r.integers(85, 96))


def plan_corpus(samples: int, seed: int, num_slices: int) -> list[Record]:
    """Plan ``samples`` records in output order (shuffled; duplicates mixed in)."""
    g = rngs(seed)
    n_dup = exact_counts(DUP_RATES, samples)
    n_orig = samples - sum(n_dup.values())
    fetch, image = exact_counts(FETCH_RATES, samples), exact_counts(IMAGE_RATES, samples)
    slice_of = g["slices"].permutation(np.arange(n_orig) % num_slices)
    recs = [Record(i, sample_scene(g["scenes"], slice_position(int(s), num_slices)), int(s))
            for i, s in enumerate(slice_of)]
    # Faults on distinct originals: consecutive chunks of one permutation, exact counts.
    perm = iter(g["faults"].permutation(n_orig).tolist())
    for kind, k in fetch.items():
        for _ in range(k):
            recs[next(perm)].fetch = kind
    for kind, k in image.items():
        for _ in range(k):
            recs[next(perm)].image_kind = kind
    clean = sorted(perm)  # what is left: originals that download fine at a normal size
    n_stamp = min(exact_counts(STAMP_RATES, samples)["watermark"], len(clean))
    for i in g["watermark"].choice(len(clean), size=n_stamp, replace=False).tolist():
        recs[clean[i]].watermark = True
    for rec in recs:
        rec.width, rec.height = _size(g["sizes"], rec.image_kind)
        rec.fmt, rec.quality = _format(g["sizes"], rec)
    for kind, k in n_dup.items():
        for _ in range(k):
            o = recs[int(clean[g["dups"].integers(len(clean))])]
            if o.index >= n_orig:
                raise AssertionError("duplicates only point at originals")
            # A re-post appears in the original's slice or a later one.
            sl = int(g["dups"].integers(o.slice_index, num_slices))
            d = Record(len(recs), o.scene, sl, o.width, o.height, o.fmt, o.quality,
                       dup_kind=kind.split("_")[0], dup_of=o.index)
            if d.dup_kind == "near":
                d.fmt = "jpeg"
            d.watermark = o.watermark  # a copy of a stamped image shows the stamp too
            recs.append(d)
    order = g["order"].permutation(len(recs)).tolist()
    planned = [recs[i] for i in order]
    _assign_caption_noise(planned, g["captions"])
    for rec in planned:
        rec.noise = [k for k in (rec.caption_noise, rec.dup_kind and f"{rec.dup_kind}_dup",
                                 rec.fetch, rec.image_kind, rec.watermark and "watermark") if k]
    return planned


def _assign_caption_noise(planned: list[Record], r: np.random.Generator) -> None:
    counts = exact_counts(CAPTION_RATES, len(planned))
    perm = iter(r.permutation(len(planned)).tolist())
    for kind, k in counts.items():
        for _ in range(k):
            planned[next(perm)].caption_noise = kind
