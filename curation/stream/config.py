"""Typed config of a stream (the ``stream:`` section of a training run), and a builder."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from pydantic import Field

from curation.config import StageConfig


class StreamConfig(StageConfig):
    """Options of :class:`~curation.stream.StreamingDataset` plus the loader's workers.

    ``weights`` (one per dataset) turns several datasets into a weighted mix.
    """

    where: str | None = None
    columns: list[str] = []
    caption_column: str = "caption"
    shuffle: bool = True
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)
    drop_last: bool = True
    weights: list[float] | None = None
    epoch_size: int | None = Field(default=None, ge=1)
    shuffle_block_size: int = Field(default=8192, ge=1)
    cache_dir: str | None = None
    cache_limit_bytes: int = Field(default=16 << 30, ge=0)
    read_ahead: int = Field(default=4, ge=0)
    decode: bool = True
    num_workers: int = Field(default=0, ge=0)


def open_stream(datasets: Any | Sequence[Any], config: StreamConfig | dict | None = None, *,
                transform: Callable | None = None, storage_options: dict | None = None,
                collate_fn: Callable | None = None, **loader_kwargs: Any):
    """Build ``(StreamingDataset, StreamingDataLoader)`` from a config (dict validated first).

    Raises:
        ConfigError: an unknown key or bad value, naming ``stream.<key>``.
    """
    from curation.stream.dataset import StreamingDataset
    from curation.stream.loader import StreamingDataLoader

    cfg = config if isinstance(config, StreamConfig) else StreamConfig.parse(config, where="stream")
    opts = cfg.model_dump()
    num_workers = opts.pop("num_workers")
    sd = StreamingDataset(datasets, transform=transform, storage_options=storage_options, **opts)
    return sd, StreamingDataLoader(sd, num_workers=num_workers, collate_fn=collate_fn, **loader_kwargs)
