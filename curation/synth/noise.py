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
# share of the trusted seed and eval pairs (true captions) whose image carries the same stamp.
# 0: the seed set is stamp-free, so the filter CLIP never sees a stamp and scores a stamped
# image's true caption like an unrelated one (median 0.10 vs 0.84; the demo's lost mismatch F1).
# 0.05 (the crawl's rate) fixes that (stamped records F1 0.26 -> 0.79, all records 0.82 -> 0.85)
# but measured 2026-12-01 it cost retrieval (235 -> 183 of 401 recovered) and the watermark
# probe on the same embeddings (held-out R 0.93 -> 0.72): bench/RESULTS.md "Demo"
SEED_STAMP_RATE = 0.0

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


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """Alt-text that truly describes ``scene`` in one of the ways web pages phrase it."""
    c = scene.caption
    t = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    return t.format(c=c, C=c[0].upper() + c[1:])


def boilerplate(rng: np.random.Generator) -> str:
    """Alt-text that describes nothing (file names, UI text, empty)."""
    return BOILERPLATE[rng.integers(len(BOILERPLATE))].format(n=int(rng.integers(1, 99999)))


def exact_counts(rates: dict[str, float], n: int) -> dict[str, int]:
    """How many records get each kind: round(rate * n), at least one when the rate is > 0
    and n >= 100 (so every fault exists in small test corpora)."""
    return {k: max(int(round(r * n)), 1 if (r > 0 and n >= 100) else 0) for k, r in rates.items()}
