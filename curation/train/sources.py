"""Where a slice's samples come from: a curated dataset (streamed) or a Parquet file (cached).

Two kinds of source:

- a curated dataset in the project format (DESIGN.md section 3), local or any fsspec URL,
  with ``where`` a DuckDB predicate over its metadata. Training *streams* it through
  :class:`curation.stream.StreamingDataset` (decode + the model's preprocess per batch,
  exactly-once epochs, resumable ``state_dict``); here only its selection index is read
  (uids and image byte sizes, for replay buffers). Held-out sets are decoded once, in read
  order, through the same stream.
- a Parquet file/glob with an ``image`` bytes column (what ``curation.synth`` writes:
  ``seed.parquet``/``eval.parquet``), filtered with DuckDB and decoded into a TensorCache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import duckdb
import torch

from curation.errors import ConfigError, CurationError
from curation.train.data import TensorCache, build_cache


def is_parquet(url: str) -> bool:
    return url.rstrip("/").endswith(".parquet")


@dataclass
class TrainSlice:
    """One training slice's selection: uids and image bytes per sample (row order fixed).

    ``cache`` holds decoded tensors for Parquet slices; it is None for curated datasets,
    which are streamed (``dataset``/``where`` define the stream).
    """

    name: str
    dataset: str
    where: str | None
    uids: list[str]
    nbytes: list[int]
    cache: TensorCache | None = None

    @property
    def streamed(self) -> bool:
        return self.cache is None

    def __len__(self) -> int:
        return len(self.uids)


def read_parquet_rows(url: str, where: str | None) -> Any:
    """Rows of a Parquet file matching ``where`` as a pyarrow Table (DuckDB)."""
    from curation.io.query import QueryError, filter_relation, sandboxed_connection

    try:  # the predicate is untrusted (a training config): sandboxed, only this file readable
        con = sandboxed_connection(parquet=url, threads=1)
        return filter_relation(con, "samples", where).to_arrow_table()
    except (duckdb.Error, QueryError) as e:
        raise ConfigError(f"{url}: cannot select where {where!r}: {str(e).splitlines()[0]}") from None


def _guard(url: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except CurationError:
        raise
    except FileNotFoundError as e:
        raise ConfigError(f"{url}: not found ({e})") from None


def stream_index(url: str, where: str | None, storage_options: dict | None = None) -> Any:
    """The selection of a curated dataset (a one-source StreamingDataset; reads no shard)."""
    from curation.stream import StreamingDataset

    return _guard(url, lambda: StreamingDataset(url, where=where, storage_options=storage_options, batch_size=1,
                                                rank=0, world_size=1))


def load_train_slice(name: str, url: str, where: str | None, preprocess: Callable, tokenizer: Callable,
                     storage_options: dict | None = None) -> TrainSlice:
    """Index a curated dataset slice (streamed later) or decode a Parquet slice into tensors."""
    if is_parquet(url):
        cache = load_slice(url, where, preprocess, tokenizer, storage_options)
        return TrainSlice(name, url, where, cache.uids, cache.nbytes, cache)
    src = stream_index(url, where, storage_options).sources[0]
    if len(src) == 0:
        raise ConfigError(f"{url}: where {where!r} selects no samples with images")
    return TrainSlice(name, url, where, [str(u) for u in src.table.column("uid").to_pylist()],
                      [int(b) for b in src.size])


def stream_cache(url: str, where: str | None, preprocess: Callable, tokenizer: Callable,
                 storage_options: dict | None = None) -> TensorCache:
    """Decode a curated dataset's selection once, in read order, through the streaming loader
    (``class_label`` is carried for zero-shot evaluation when the metadata has it)."""
    from curation.io import Dataset
    from curation.stream import StreamingDataset

    ds = _guard(url, lambda: Dataset(url, storage_options=storage_options))
    cols = ["class_label"] if "class_label" in ds.columns else []
    sd = StreamingDataset(ds, where=where, columns=cols, transform=preprocess, shuffle=False, rank=0,
                          world_size=1, batch_size=256, drop_last=False)
    samples = list(sd)
    if not samples:
        raise ConfigError(f"{url}: where {where!r} selects no samples with images")
    caps = [str(s["caption"]) for s in samples]
    tokens = torch.cat([tokenizer(caps[i:i + 1024]) for i in range(0, len(caps), 1024)])
    labels = [s.get("class_label") for s in samples] if cols else []
    src = sd.sources[0]
    size = dict(zip(src.table.column("uid").to_pylist(), (int(b) for b in src.size)))
    uids = [str(s["uid"]) for s in samples]
    return TensorCache(torch.stack([s["image"] for s in samples]), tokens, caps, uids,
                       labels if any(lb is not None for lb in labels) else [], [size.get(u, 0) for u in uids])


def load_slice(url: str, where: str | None, preprocess: Callable, tokenizer: Callable,
               storage_options: dict | None = None) -> TensorCache:
    """Decode one slice into tensors (held-out sets, Parquet training slices); raises
    ConfigError when it selects nothing."""
    if not is_parquet(url):
        return stream_cache(url, where, preprocess, tokenizer, storage_options)
    rows = _guard(url, lambda: read_parquet_rows(url, where))
    if rows.num_rows == 0:
        raise ConfigError(f"{url}: where {where!r} selects no samples with images")
    return build_cache(rows, preprocess, tokenizer)
