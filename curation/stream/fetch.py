"""Turning a worker's batches of positions into decoded samples, with read-ahead.

A thread pool fetches the bytes of the next ``read_ahead`` batches while the current one
is decoded, so remote latency (range GETs, whole-shard downloads into the cache) overlaps
with decoding. Decoding stays on the consuming thread (user transforms need not be
thread-safe). Corrupt members are skipped, logged and counted by reason.
"""
from __future__ import annotations

import logging
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from curation.stream.decode import CorruptSample, decode_image
from curation.stream.reader import SourceReader

log = logging.getLogger("curation.stream")


class BatchFetcher:
    """Reads and decodes batches for one process (main or a DataLoader worker).

    Args:
        readers: one :class:`SourceReader` per source.
        src, local: ``[items]`` -> per global sample index, its source and position in that source.
        transform: applied to each decoded RGB PIL image.
        read_ahead: batches fetched ahead of the one being decoded (0: synchronous).
    """

    def __init__(self, readers: list[SourceReader], src: Any, local: Any,
                 transform: Callable, caption_column: str, columns: list[str], *,
                 read_ahead: int = 4, max_pixels: int, tag_source: bool, decode: bool = True):
        self.readers = readers
        self.src, self.local = src, local
        self.transform = transform
        self.caption_column = caption_column
        self.columns = columns
        self.read_ahead = read_ahead
        self.max_pixels = max_pixels
        self.tag_source = tag_source
        self.decode = decode
        self.counters: Counter[str] = Counter()
        self.pid = os.getpid()

    def _read(self, items: np.ndarray) -> list[tuple[bytes, dict[str, Any]]]:
        """Bytes plus metadata of the samples ``items`` (global indices), in order."""
        out: list[Any] = [None] * len(items)
        srcs = self.src[items]
        for s in np.unique(srcs):
            where = np.flatnonzero(srcs == s)
            pos = self.local[items[where]]
            reader = self.readers[int(s)]
            blobs = reader.read(pos)
            rows = reader.index.rows(pos)
            for w, b, r in zip(where, blobs, rows):
                if self.tag_source:
                    r["source"] = int(s)
                out[w] = (b, r)
        return out

    def _sample(self, data: bytes, row: dict[str, Any]) -> dict[str, Any] | None:
        if not self.decode:  # encoded bytes for batched GPU decoding (e.g. nvjpeg)
            if not data:
                return self._skip(row, CorruptSample("empty", "member has no bytes"))
            image = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            try:
                image = self.transform(decode_image(data, self.max_pixels))
            except CorruptSample as e:
                return self._skip(row, e)
        sample = {"uid": row["uid"], "image": image, "caption": row.get(self.caption_column) or ""}
        for c in self.columns:
            sample[c] = row.get(c)
        if self.tag_source:
            sample["source"] = row["source"]
        self.counters["samples"] += 1
        return sample

    def _skip(self, row: dict[str, Any], e: CorruptSample) -> None:
        self.counters[f"corrupt_{e.reason}"] += 1
        log.warning("skipping sample %s: %s", row.get("uid"), e)
        return None

    def batches(self, batches: Iterable[np.ndarray]) -> Iterator[list[dict[str, Any]]]:
        """Decoded samples per batch, in order; a batch is shorter only by skipped members."""
        it = iter(batches)
        if self.read_ahead <= 0:
            for items in it:
                yield self._decode(self._read(items))
            return
        pool = ThreadPoolExecutor(max_workers=min(4, self.read_ahead), thread_name_prefix="curation-readahead")
        pending: deque[Future] = deque()
        try:
            for items in it:
                pending.append(pool.submit(self._read, items))
                if len(pending) > self.read_ahead:
                    yield self._decode(pending.popleft().result())
            while pending:
                yield self._decode(pending.popleft().result())
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _decode(self, fetched: list[tuple[bytes, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for data, row in fetched:
            s = self._sample(data, row)
            if s is not None:
                out.append(s)
        return out
