"""One download task: fetch one input shard's URLs with threads, resize, write one output shard.

Like img2dataset's ``Downloader.download_shard``: a thread pool fetches (I/O bound) while the
task's main thread checks, resizes and encodes (CPU bound) and streams samples into the shard
writer in input order, so the shard bytes do not depend on which fetch finished first.

Per image, in :func:`process_image`: SHA-256, the header checks of
:func:`curation.io.images.open_image` (format allow-list, pixel cap, memory budget in bytes),
ONE decode (JPEG in draft mode, never below the output size), the blocklist screen, the pHash
and the resize + encode all from that decoded frame (:mod:`curation.download.resize`). Memory
per task is bounded by bytes: at most ``lookahead_bytes`` of fetched bodies wait for the
decoder (plus one body per fetch thread in flight, each under ``max_bytes``), and one image
in decoding costs at most ~2.2x ``max_decoded_bytes``.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

from curation import status as st
from curation.blocklist.screen import screen
from curation.download.config import DownloadConfig
from curation.download.fetch import Budget, Client, FetchResult, await_fetch, fetch_with_retries
from curation.download.resize import Rejected, Resizer, decode_for
from curation.io.images import ImageError

TOO_SMALL = "too_small"
BAD_ASPECT_RATIO = "bad_aspect_ratio"
# ImageError reasons -> row status (over_memory_budget: the image is too costly to decode, like a bomb)
_DECODE_STATUS = {"too_many_pixels": st.TOO_MANY_PIXELS, "over_memory_budget": st.TOO_MANY_PIXELS}


def make_resizer(cfg: DownloadConfig) -> Resizer:
    return Resizer(image_size=cfg.image_size, resize_mode=cfg.resize_mode,
                   resize_only_if_bigger=cfg.resize_only_if_bigger, encode_format=cfg.encode_format,
                   encode_quality=cfg.encode_quality, min_image_size=cfg.min_image_size,
                   max_aspect_ratio=cfg.max_aspect_ratio, max_pixels=cfg.max_pixels,
                   max_decoded_bytes=cfg.max_decoded_bytes)


def process_image(raw: bytes, cfg: DownloadConfig, resizer: Resizer) -> tuple[dict[str, Any], bytes | None]:
    """Check, decode once, screen, hash, resize and encode downloaded bytes.

    Returns (columns, encoded image or None). Nothing is decoded before the header passed the
    format allow-list, the pixel cap and the memory budget, so a decompression bomb or an EPS
    file named ``.jpg`` costs no memory and never reaches an interpreter.
    """
    cols: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest(), "original_size": len(raw)}
    try:
        frame = decode_for(raw, resizer)
    except ImageError as e:
        return {**cols, "status": _DECODE_STATUS.get(e.reason, st.NOT_IMAGE), "error": str(e)[:200]}, None
    ow, oh = frame.info["curation_original_size"]
    cols.update(original_width=ow, original_height=oh)
    try:
        if screen(cols, raw, cfg, image=frame):  # hash lists + PDQ (curation.blocklist): a match is never written
            return cols, None
        out = resizer.resize(frame)
        if cfg.phash:
            # pHash of the whole image as downloaded, never of a crop (after a crop to 64 px, crops
            # and shifts of one image drift apart), taken without a second decode from the decoded
            # frame (at least HASH_MIN_SIDE px short side, see decode_for) with the exact Lanczos
            # reduction: the reduced-gap shortcut or the resized output moved near-duplicate pairs
            # of the demo corpus up to 8 bits apart (the full decode: at most 4, the dedup radius)
            from curation.dedup.phash import phash_image, to_hex

            cols["phash"] = to_hex(phash_image(frame))
    except Rejected as e:
        return {**cols, "status": e.status, "error": str(e)}, None
    except ImageError as e:
        return {**cols, "status": _DECODE_STATUS.get(e.reason, st.NOT_IMAGE), "error": str(e)[:200]}, None
    finally:
        frame.close()
    cols.update(status=st.SUCCESS, error=None, width=out.width, height=out.height)
    return cols, out.data


def download_rows(rows: list[dict[str, Any]], cfg: DownloadConfig) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Yield ``(row, image)`` for every input row, in input order: row gets ``status``,
    ``error``, sizes and ``sha256``; image is the encoded bytes or None on failure."""
    client = Client(cfg)
    resizer = make_resizer(cfg)
    window = LookAhead(cfg.lookahead_bytes)
    max_items = max(4 * cfg.thread_count, 64)  # the ordering window, in URLs
    with ThreadPoolExecutor(max_workers=cfg.thread_count, thread_name_prefix="curation-fetch") as pool:
        futures: list = []
        it = iter(rows)
        nxt = next(it, None)
        while nxt is not None or futures:
            while nxt is not None and len(futures) < max_items:
                budget = Budget(cfg.request_deadline)
                seq = window.enqueue()
                fut = pool.submit(window.gated, seq, fetch_with_retries, client, nxt.get("url"), cfg.retries, budget)
                futures.append((nxt, budget, seq, fut))
                nxt = next(it, None)
            row, budget, seq, fut = futures.pop(0)
            res: FetchResult = await_fetch(fut, budget)  # last resort: the fetch has its own deadline
            window.consumed(seq)
            yield _finish(row, res, cfg, resizer)


class LookAhead:
    """Bounds, in bytes, the fetched bodies waiting for the decoder.

    URLs are numbered in input order (:meth:`enqueue`) and consumed in that order. A fetch
    thread starts its next URL (:meth:`gated`) only while less than ``max_bytes`` of bodies
    wait undecoded, except the URL the decoder waits for next, which always starts (so the
    queue never stalls). Waiting bodies therefore stay under ``max_bytes`` plus one body per
    fetch thread in flight. The wait happens before the fetch starts its deadline.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.held = 0
        self.head = 0  # the next sequence number the decoder consumes
        self._next = 0
        self._sizes: dict[int, int] = {}
        self._cond = threading.Condition()

    def enqueue(self) -> int:
        seq, self._next = self._next, self._next + 1
        return seq

    def gated(self, seq: int, fn, *args):
        """Run ``fn(*args)`` once there is room; its body's bytes count until :meth:`consumed`."""
        with self._cond:
            while self.held >= self.max_bytes and seq > self.head:
                self._cond.wait()
        res = fn(*args)
        n = len(getattr(res, "data", None) or b"")
        with self._cond:
            if seq >= self.head:  # not consumed (given up on) meanwhile
                self._sizes[seq] = n
                self.held += n
        return res

    def consumed(self, seq: int) -> None:
        with self._cond:
            self.held -= self._sizes.pop(seq, 0)
            self.head = max(self.head, seq + 1)
            self._cond.notify_all()


def _finish(row: dict[str, Any], res: FetchResult, cfg: DownloadConfig, resizer) -> tuple[dict[str, Any], bytes | None]:
    out = dict(row)
    out.update(status=res.status, error=res.error, width=None, height=None, original_width=None,
               original_height=None, sha256=None, original_size=None)
    if res.status != st.SUCCESS:
        return out, None
    cols, img = process_image(res.data or b"", cfg, resizer)
    out.update(cols)
    return out, img
