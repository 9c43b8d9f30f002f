"""Training batches for one slice's pool, with a resumable position.

Two sources of batches, one interface (``next() -> (images, tokens)``, ``state_dict``,
``load_state_dict``, ``close``):

- :class:`StreamBatches` streams curated datasets through
  :class:`curation.stream.StreamingDataset` / :class:`~curation.stream.StreamingDataLoader`:
  the pool is a ``StreamingDataset.mix`` of the current slice and its replay subsets
  (weighted by size, so every pooled sample comes once per epoch), images are decoded and
  put through the model's preprocess as the stream's transform, and the position is the
  loader's ``state_dict()``, which resumes at the exact next sample (on any world size).
  Under DDP each rank streams ``global_batch / world`` samples per step; the stream's
  global order does not depend on the world size, so the ranks' batches together are the
  single-process global batch.
- :class:`CacheBatches` indexes an in-memory TensorCache with :class:`PoolSampler`
  (Parquet sources).
"""
from __future__ import annotations

from typing import Any, Callable, Generator

import torch

from curation.errors import ConfigError
from curation.train.data import TensorCache
from curation.train.loop import PoolSampler, rank_chunk


class CacheBatches:
    """Global batches from a TensorCache; this rank's contiguous chunk of each."""

    def __init__(self, pool: TensorCache, global_batch: int, seed: int):
        self.pool = pool
        self.sampler = PoolSampler(len(pool), global_batch, seed=seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rank_chunk(self.sampler.next())
        return self.pool.images[idx], self.pool.tokens[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])

    def close(self) -> None:
        pass


def uid_subset_where(where: str | None, uids: list[str]) -> str:
    """``where`` restricted to an explicit uid list (a replay subset), as SQL."""
    quoted = ", ".join("'" + u.replace("'", "''") + "'" for u in uids)
    inside = f"uid IN ({quoted})"
    return f"({where}) AND {inside}" if where and where.strip() else inside


def open_pool_stream(sources: list[dict[str, Any]], *, transform: Callable, seed: int, global_batch: int,
                     storage_options: dict | None = None, num_workers: int = 0) -> tuple[Any, Any]:
    """``(StreamingDataset, StreamingDataLoader)`` over the pool's sources.

    Args:
        sources: ``[{"dataset", "where", "uids": list | None}]``, the current slice first;
            ``uids`` restricts a source to an explicit subset (a replay buffer).
        transform: PIL image -> tensor (the model's preprocess).
        seed: the stream's order seed.
        global_batch: samples per step over all ranks (must divide by the world size).
    """
    import torch.distributed as dist

    from curation.stream import StreamingDataLoader, StreamingDataset

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if global_batch % world:
        raise ConfigError(f"batch_size: {global_batch} is not divisible by the world size {world}")
    common: dict[str, Any] = dict(transform=transform, seed=seed, batch_size=global_batch // world, drop_last=True,
                                  shuffle=True, storage_options=storage_options)
    parts = [StreamingDataset(s["dataset"], where=s["where"] if s.get("uids") is None
                              else uid_subset_where(s["where"], s["uids"]), **common) for s in sources]
    sizes = [len(p.sources[0]) for p in parts]
    sd = parts[0] if len(parts) == 1 else StreamingDataset.mix(parts, weights=sizes, **common)
    for s, n in zip(sources, sizes):
        s["samples"] = n
    if sd.num_batches() == 0:
        raise ConfigError(f"batch_size: the pool has {sum(sizes)} samples, fewer than one global batch "
                          f"of {global_batch}")
    return sd, StreamingDataLoader(sd, num_workers=num_workers)


class StreamBatches:
    """Endless batches from a StreamingDataLoader (epoch after epoch), captions tokenized here."""

    def __init__(self, loader: Any, tokenizer: Callable):
        self.loader, self.tokenizer = loader, tokenizer
        self._it: Generator[Any, None, None] | None = None

    def _endless(self) -> Generator[Any, None, None]:
        while True:
            n = 0
            for batch in self.loader:
                n += 1
                yield batch
            if n == 0:
                raise ConfigError("stream: an epoch delivered no batches")

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = self._endless()
        batch = next(self._it)
        return batch["image"], self.tokenizer(list(batch["caption"]))

    def state_dict(self) -> dict[str, Any]:
        """The loader's position after the batches handed out so far (identical on every rank)."""
        return {"loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._it is not None:
            raise RuntimeError("load_state_dict before the first batch")
        self.loader.load_state_dict(state["loader"])

    def close(self) -> None:
        if self._it is not None:
            self._it.close()  # ends the DataLoader iterator (and its worker processes)
            self._it = None
