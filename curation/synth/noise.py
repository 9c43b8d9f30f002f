"""The noise model of the synthetic crawl: which faults exist, how often, and what a correct
downloader reports for each (``expected_status``, from :mod:`curation.status`).

Rates are fractions of all records and close to what audits of LAION/DataComp-style crawls
report. Fetch faults are mutually exclusive (one per record); caption noise is independent of
them; duplicates are extra records pointing at clean originals.
"""
from __future__ import annotations

import numpy as np

from curation import status as st
from curation.synth.scenes import Scene

CAPTION_RATES: dict[str, float] = {"mismatched_caption": 0.15, "boilerplate_caption": 0.08}
DUP_RATES: dict[str, float] = {"exact_dup": 0.05, "near_dup": 0.05}
FETCH_RATES: dict[str, float] = {
    "http_404": 0.02, "http_500": 0.01, "timeout": 0.01, "not_image": 0.02, "oversized": 0.01,
    "too_many_pixels": 0.01, "noai": 0.02, "robots": 0.01, "redirect": 0.01, "transient": 0.01,
    "blocked_redirect": 0.0025,
}
IMAGE_RATES: dict[str, float] = {"tiny": 0.02, "extreme_aspect": 0.01}
# a stock-photo watermark (curation.synth.stamp) on this fraction of records, drawn on clean
# originals; duplicates of a stamped original carry it too (so its count can exceed the rate)
STAMP_RATES: dict[str, float] = {"watermark": 0.05}
# share of the trusted seed pairs whose image carries the crawl's stamp, with " with a watermark"
# added to their caption (SEED_STAMP_CAPTION): a trusted set describes what it shows. A filter CLIP
# that never saw a stamp scores a stamped image's true caption like an unrelated one (median 0.10
# vs 0.84). Stamped seeds with plain captions fix those records but cost shape detail (retrieval
# 235 -> 183 of 401); captioned, most of the shape accuracy stays (bench/RESULTS.md "Demo"). The
# eval pairs stay unstamped, in bare captions: they measure retrieval against the caption bank.
SEED_STAMP_RATE = 0.05
SEED_STAMP_CAPTION = " with a watermark"

# What a correct downloader (retries >= 2, safe defaults, robots/X-Robots-Tag honoured) reports.
EXPECTED_STATUS: dict[str, str] = {
    "http_404": st.http_status(404),
    "http_500": st.http_status(500),        # persistent: still 500 after every retry
    "timeout": st.TIMEOUT,                  # the server stalls far past any sane client timeout
    "not_image": st.NOT_IMAGE,              # HTML body (with an image or an HTML content type)
    "oversized": st.TOO_LARGE,              # > OVERSIZE_BYTES of valid image + trailing bytes
    "too_many_pixels": st.TOO_MANY_PIXELS,  # 20000x20000 PNG of ~50 KB
    "noai": st.OPTED_OUT,                   # X-Robots-Tag: noai / noimageai (and variants)
    "robots": st.ROBOTS_DISALLOWED,         # under /private/, which /robots.txt disallows
    "redirect": st.SUCCESS,                 # 2-3 same-host redirects to the real image
    "transient": st.SUCCESS,                # 503 on the first 1-2 requests: success after retries
    "blocked_redirect": st.BLOCKED_ADDRESS,  # 302 to 127.0.0.2: blocked unless private allowed
}
STATUS_NOTES = {
    "timeout": "the server stalls stall_seconds (default 60) before the headers or after half "
               "the body; any client timeout below that reports 'timeout'",
    "robots": "served normally if fetched anyway: the server counts hits so tests can check "
              "that a downloader never requested a /private/ path",
    "success": "includes tiny, extreme_aspect, duplicates and noisy captions: filters and dedup "
               "(not the downloader) are meant to catch those",
    "transient": "503 for the first 1-2 requests of the path per server instance; 'success' "
                 "needs >= 2 retries, else 'http_503'",
    "blocked_redirect": "302 to http://127.0.0.2:<port>/...; a downloader that allows only the "
                        "server's own host reports 'blocked_address', one that allows every "
                        "private address gets 'connection_error' (nothing listens there)",
    "watermark": "a downloadable image with translucent diagonal bars and an agency name drawn "
                 "over it; the truth's noise lists it; filters do not target it (train-head does)",
    "oversized": "the body is the image plus padding to >= oversize_bytes (2.5 MB); half the "
                 "responses omit Content-Length",
}
OVERSIZE_BYTES = 2_500_000
NOAI_VARIANTS = ("noai", "noimageai", "noai, noimageai", "noindex, noimageai", "NoAI")
ROBOTS_PREFIX = "/private/"

BOILERPLATE = ("IMG_{n:04d}.jpg", "DSC{n:05d}.JPG", "click here", "", "image", "photo",
               "untitled", "thumbnail", "banner", "Image {n}", "placeholder", "read more")
_TEMPLATES = ("{c}", "{c}", "{c}", "{C}.", "photo of {c}", "a picture of {c}",
              "{C} - stock image", "{C} | free download", "illustration: {c}", "{c}, vector art")


def describe(scene: Scene, rng: np.random.Generator, extra: str = "") -> str:
    """Alt-text that truly describes ``scene`` (plus ``extra``, e.g. " with a watermark", after
    the scene's caption) in one of the ways web pages phrase it."""
    return _phrase(_TEMPLATES[rng.integers(len(_TEMPLATES))], scene.caption + extra)


def phrasings(caption: str) -> set[str]:
    """Every alt text :func:`describe` can phrase ``caption`` as (``caption`` includes any extra)."""
    return {_phrase(t, caption) for t in _TEMPLATES}


def _phrase(template: str, c: str) -> str:
    return template.format(c=c, C=c[0].upper() + c[1:])


def boilerplate(rng: np.random.Generator) -> str:
    """Alt-text that describes nothing (file names, UI text, empty)."""
    return BOILERPLATE[rng.integers(len(BOILERPLATE))].format(n=int(rng.integers(1, 99999)))


def exact_counts(rates: dict[str, float], n: int) -> dict[str, int]:
    """How many records get each kind: round(rate * n), at least one when the rate is > 0
    and n >= 100 (so every fault exists in small test corpora)."""
    return {k: max(int(round(r * n)), 1 if (r > 0 and n >= 100) else 0) for k, r in rates.items()}
