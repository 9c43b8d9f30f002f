"""Download-time screening: hash-list blocking before anything is written, and the stored PDQ.

:func:`screen` is the one call the download worker makes for every fetched image (URL
lists and WebDataset ingest alike), after the header's pixel cap check and before the
resizer. In order:

1. SHA-256 and MD5 of the bytes as fetched are looked up in every configured list;
2. the image is decoded once for PDQ (``pdq``/``pdq_quality`` columns, stored for later lists
   and for ``curate block``), and the hash is compared with every list's PDQ entries within
   ``pdq_distance`` bits.

On a match the row becomes ``status = blocked_hash`` with ``blocklist = <list name>`` and
every column that describes the image (sizes, digests, perceptual hashes) is cleared, and the
caller drops the bytes: they never reach the shard writer's temp tar, a thumbnail, the
embeddings or the report. Matching costs one set lookup per digest and one vectorised XOR +
popcount over the PDQ table (32 bytes per entry).
"""
from __future__ import annotations

import hashlib
from typing import Any, Protocol

from curation import status as st
from curation.blocklist.lists import HashList, load_lists
from curation.blocklist.pdq import DEFAULT_DISTANCE, from_hex, hamming_to_list, pdq_bytes, pdq_image

BLOCKED_HASH = st.BLOCKED_HASH
# columns that describe the image itself: a blocked row keeps none of them
_IMAGE_COLUMNS = ("sha256", "original_size", "original_width", "original_height", "width", "height",
                  "phash", "pdq", "pdq_quality")


class ScreenConfig(Protocol):
    blocklists: list[str]
    pdq: bool
    pdq_distance: int


def match_digests(raw: bytes, lists: list[HashList]) -> tuple[str, str] | None:
    """(list name, kind) of the first list holding the SHA-256 or MD5 of ``raw``."""
    if not lists:
        return None
    sha = hashlib.sha256(raw).hexdigest()
    md5 = None
    for hl in lists:
        if sha in hl.sha256:
            return hl.name, "sha256"
        if hl.md5:
            md5 = md5 or hashlib.md5(raw, usedforsecurity=False).hexdigest()
            if md5 in hl.md5:
                return hl.name, "md5"
    return None


def match_pdq(pdq_hex: str | None, lists: list[HashList], distance: int = DEFAULT_DISTANCE) -> tuple[str, int] | None:
    """(list name, Hamming distance) of the closest PDQ entry within ``distance``, first list first."""
    if pdq_hex is None:
        return None
    h = from_hex(pdq_hex)
    for hl in lists:
        if len(hl.pdq):
            d = int(hamming_to_list(h, hl.pdq).min())
            if d <= distance:
                return hl.name, d
    return None


def blocked_row(cols: dict[str, Any], name: str, why: str) -> dict[str, Any]:
    """Turn ``cols`` into a blocked row in place: status, list name, no image facts."""
    for c in _IMAGE_COLUMNS:
        if c in cols:
            cols[c] = None
    cols.update(status=BLOCKED_HASH, blocklist=name, error=f"matched {why} on blocklist {name!r}")
    return cols


def screen(cols: dict[str, Any], raw: bytes, cfg: ScreenConfig, image: Any = None) -> bool:
    """Screen one fetched image; True when it is blocked (the caller must drop ``raw``).

    Adds ``pdq``/``pdq_quality`` to ``cols`` when ``cfg.pdq`` (PDQ is also computed, for
    matching only, when a list has PDQ entries and ``cfg.pdq`` is off), from ``image`` (the
    worker's one decoded PIL frame, possibly a JPEG draft reduction) when given, else by
    decoding ``raw``. On a match, ``cols`` is rewritten by :func:`blocked_row`.
    """
    lists = load_lists(tuple(cfg.blocklists)) if cfg.blocklists else []
    hit = match_digests(raw, lists)
    if hit is not None:
        blocked_row(cols, hit[0], f"{hit[1]} of the fetched bytes")
        return True
    need_pdq = any(len(hl.pdq) for hl in lists)
    if cfg.pdq or need_pdq:
        h, q = pdq_image(image) if image is not None else pdq_bytes(raw)
        if cfg.pdq:
            cols.update(pdq=h, pdq_quality=q)
        near = match_pdq(h, lists, cfg.pdq_distance)
        if near is not None:
            blocked_row(cols, near[0], f"PDQ within {near[1]} bits")
            return True
    return False
