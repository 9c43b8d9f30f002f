"""Filtering rules as pure functions: columns in, per-row pass masks out.

Each rule set returns ``{reason_name: pass_mask}``; a row fails a rule where its mask is
False and then carries ``reason_name`` in ``reasons``. No I/O here: the stage reads columns,
computes the dataset-wide inputs (top-fraction threshold, shared alt-texts) and calls these.

Boundaries, exactly as the papers state them:

* DataComp basic: caption English (py3langid), words ``> 2``, characters ``> 5``,
  shorter side ``>= 200`` px, aspect ratio (long/short side) ``<= 3``.
* LAION CLIP threshold: ``clip_score >= t`` (0.28 for ViT-B/32).
* DataComp CLIP top fraction ``f``: sort the N scored samples' scores descending; the
  threshold is the score at 0-based rank ``min(floor(N*f), N-1)``; keep ``>=`` it, so every
  sample tied with the threshold is kept (slightly more than ``f*N`` when there are ties).
* ALIGN: shorter side ``> 200``, aspect ratio ``< 3``, ``3 <= words <= 20``, and the
  alt-text (exact string) shared by at most 10 successful images in the whole dataset.

Sizes use ``original_width``/``original_height`` (the image as published), falling back to
``width``/``height`` where those are null. Words are whitespace-separated tokens; characters
count the caption as stored. A null caption has 0 words and 0 characters.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

DATACOMP_MIN_SIDE = 200
DATACOMP_MAX_ASPECT = 3.0
ALIGN_MAX_SHARED = 10
LAION_B32_THRESHOLD = 0.28


def word_counts(captions: Sequence[str | None]) -> np.ndarray:
    return np.array([len(c.split()) if c else 0 for c in captions], dtype=np.int64)


def char_counts(captions: Sequence[str | None]) -> np.ndarray:
    return np.array([len(c) if c else 0 for c in captions], dtype=np.int64)


def sides(width: Sequence, height: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(shorter side, aspect ratio long/short); missing or zero sizes give (0, inf)."""
    w = np.array([0 if v is None else v for v in width], dtype=np.float64)
    h = np.array([0 if v is None else v for v in height], dtype=np.float64)
    short, long_ = np.minimum(w, h), np.maximum(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(short > 0, long_ / np.where(short > 0, short, 1), np.inf)
    return short, aspect


@functools.lru_cache(maxsize=1)
def _langid():
    import py3langid

    return py3langid


def languages(captions: Sequence[str | None]) -> list[str | None]:
    """ISO 639-1 code py3langid assigns each caption (None for an empty caption)."""
    lid = _langid()
    return [lid.classify(c)[0] if c and c.strip() else None for c in captions]


def datacomp_basic(captions: Sequence[str | None], width: Sequence, height: Sequence,
                   english: bool = True) -> dict[str, np.ndarray]:
    """DataComp's ``basic`` filter, one mask per condition."""
    short, aspect = sides(width, height)
    out = {
        "datacomp_words": word_counts(captions) > 2,
        "datacomp_chars": char_counts(captions) > 5,
        "datacomp_min_side": short >= DATACOMP_MIN_SIDE,
        "datacomp_aspect": aspect <= DATACOMP_MAX_ASPECT,
    }
    if english:
        out["datacomp_english"] = np.array([lang == "en" for lang in languages(captions)], dtype=bool)
    return out


def clip_threshold(scores: Sequence[float | None], threshold: float) -> np.ndarray:
    """``score >= threshold``; unscored rows fail. Compared in float32, as scores are stored."""
    s = _scores(scores)
    return ~np.isnan(s) & (s >= np.float32(threshold))


def score_bounds(scores: Sequence[float | None], *, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``low <= score <= high`` (either bound optional) for classifier scores such as
    ``aesthetic_score`` or ``nsfw_score`` (the classify stage); unscored rows fail."""
    s = _scores(scores)
    ok = ~np.isnan(s)
    if low is not None:
        ok &= s >= np.float32(low)
    if high is not None:
        ok &= s <= np.float32(high)
    return ok


def top_fraction_threshold(scored: Sequence[float], fraction: float) -> float | None:
    """DataComp's threshold: the score at rank ``min(floor(N*f), N-1)`` of the descending
    sort of the N scored samples (None when N is 0: nothing passes)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s = np.sort(np.asarray(scored, dtype=np.float32))[::-1]
    if len(s) == 0:
        return None
    return float(s[min(math.floor(len(s) * fraction), len(s) - 1)])


def top_fraction(scores: Sequence[float | None], threshold: float | None) -> np.ndarray:
    if threshold is None:
        return np.zeros(len(scores), dtype=bool)
    return clip_threshold(scores, threshold)


def align(captions: Sequence[str | None], width: Sequence, height: Sequence,
          shared: set[str] | frozenset[str]) -> dict[str, np.ndarray]:
    """ALIGN's noisy-text rules; ``shared`` = alt-texts used by more than 10 images."""
    short, aspect = sides(width, height)
    words = word_counts(captions)
    return {
        "align_min_side": short > DATACOMP_MIN_SIDE,
        "align_aspect": aspect < DATACOMP_MAX_ASPECT,
        "align_words": (words >= 3) & (words <= 20),
        "align_shared_alt_text": np.array([c is None or c not in shared for c in captions], dtype=bool),
    }


def _scores(scores: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in scores], dtype=np.float32)


def combine(n: int, masks: dict[str, np.ndarray],
            failed_status: Sequence[str | None]) -> tuple[list[bool], list[list[str]]]:
    """``keep`` and ``reasons`` per row. A failed download (status not ``success``) is dropped
    with its status as the only reason; otherwise every failed rule is named, in order."""
    keep, reasons = [], []
    names = list(masks)
    for i in range(n):
        st = failed_status[i]
        if st is not None:
            keep.append(False)
            reasons.append([st])
            continue
        r = [name for name in names if not masks[name][i]]
        keep.append(not r)
        reasons.append(r)
    return keep, reasons
