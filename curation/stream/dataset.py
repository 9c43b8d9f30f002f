"""``StreamingDataset``: exactly-once epochs over curated datasets, elastic resume, subsets, mixing.

Guarantees (DESIGN.md section 5.4), per epoch and for any world size and worker count:

* every selected item is delivered exactly once across all ranks and DataLoader workers,
  except the counted remainder (``dropped``), which rotates across epochs (see
  :mod:`curation.stream.order` for the policy);
* every rank delivers the same number of batches (no padding, no duplicated samples);
* the order depends on ``(seed, epoch)`` only (and not on world size or worker count:
  the global sequence is the same, only its cutting differs);
* ``state_dict()`` taken on any rank resumes the whole job, on any world size, with the
  next item being the one that would have come.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence, cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from curation.errors import ConfigError
from curation.io import Dataset
from curation.stream.cache import ShardCache
from curation.stream.decode import DEFAULT_MAX_PIXELS, pil_to_tensor
from curation.stream.fetch import BatchFetcher
from curation.stream.index import SourceIndex, build_index
from curation.stream.order import Layout, drop_cycle, epoch_order, make_layout, mix_epoch_items
from curation.stream.reader import SourceReader, default_cache_dir

STATE_VERSION = 1


class StreamingDataset(IterableDataset):
    """A torch ``IterableDataset`` of decoded samples from one or more curated datasets.

    Yields dicts ``{"uid", "image", "caption", <columns>...}`` (plus ``"source"`` when
    there are several sources). Use :class:`~curation.stream.StreamingDataLoader` with it:
    it batches inside workers (so a skipped corrupt member never shifts batch
    boundaries) and tracks progress for :meth:`state_dict`.

    Args:
        dataset: a :class:`~curation.io.Dataset`, a dataset URL (local or fsspec), or a list.
        where: DuckDB predicate over the current metadata version selecting samples
            (or one per dataset).
        columns: metadata columns copied into each sample.
        caption_column: metadata column used as ``caption``.
        transform: applied to each RGB PIL image (default: uint8 CHW tensor).
        shuffle, seed: the order is a pure function of ``(seed, epoch)``.
        rank, world_size: default from torch.distributed, then ``RANK``/``WORLD_SIZE``, then 0/1.
        batch_size: per-rank batch size (the unit of partitioning and of progress).
        drop_last: True drops ``N mod (world_size*batch_size)`` items per epoch; False drops
            only ``N mod world_size`` and ends with one smaller batch per rank.
        weights: per-source mixing weights (see :meth:`mix`); ``epoch_size`` items per epoch.
        shuffle_block_size: items per shuffled block (the deterministic shuffle buffer).
        cache_dir, cache_limit_bytes: local cache of remote shards, bounded in bytes.
        read_ahead: batches fetched ahead by a thread pool.
        storage_options: fsspec options for URLs given as strings.
        decode: False yields each image's encoded bytes as a 1-D uint8 tensor instead (for
            batched GPU decoding, e.g. ``torchvision.io.decode_jpeg(..., device="cuda")``);
            the transform is then not applied.
    """

    def __init__(self, dataset: Any, *, where: str | Sequence[str | None] | None = None, columns: Sequence[str] = (),
                 caption_column: str = "caption", transform: Callable | None = None, shuffle: bool = True,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None, batch_size: int = 32,
                 drop_last: bool = True, weights: Sequence[float] | None = None, epoch_size: int | None = None,
                 shuffle_block_size: int = 8192, cache_dir: str | None = None,
                 cache_limit_bytes: int = 16 << 30, read_ahead: int = 4, whole_shard_fraction: float = 0.5,
                 storage_options: dict | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode: bool = True):
        if batch_size < 1:
            raise ConfigError(f"stream batch_size: must be >= 1 (got {batch_size!r})")
        datasets = list(dataset) if isinstance(dataset, (list, tuple)) else [dataset]
        if not datasets:
            raise ConfigError("stream dataset: no dataset given")
        if weights is not None and (len(weights) != len(datasets) or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ConfigError(f"stream weights: need {len(datasets)} non-negative weights with a positive sum "
                              f"(got {list(weights)!r})")
        self.columns = list(columns)
        self.caption_column = caption_column
        self.transform = transform or pil_to_tensor
        self.shuffle, self.seed = shuffle, int(seed)
        self._rank, self._world_size = rank, world_size
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        self.weights = list(weights) if weights is not None else None
        self.epoch_size = epoch_size
        self.shuffle_block_size = int(shuffle_block_size)
        self.cache_dir, self.cache_limit_bytes = cache_dir, int(cache_limit_bytes)
        self.read_ahead, self.whole_shard_fraction = int(read_ahead), float(whole_shard_fraction)
        self.max_pixels, self.decode = max_pixels, bool(decode)
        # a list/tuple holds one predicate per dataset; anything else is one predicate for all
        wheres: list[str | None] = (list(where) if isinstance(where, (list, tuple))
                                    else [cast("str | None", where)] * len(datasets))
        if len(wheres) != len(datasets):
            raise ConfigError(f"stream where: {len(wheres)} predicates for {len(datasets)} datasets")
        self.sources: list[SourceIndex] = []
        for d, w in zip(datasets, wheres):
            ds = d if isinstance(d, Dataset) else Dataset(str(d), storage_options=storage_options)
            self.sources.append(build_index(ds, w, self.columns, caption_column))
        # global sample index -> (source, position in it), computed from the sources' starts:
        # nothing per sample is held here beyond the indexes' own compact arrays
        starts = np.cumsum([0] + [len(s) for s in self.sources[:-1]]).astype(np.int64)
        self._src, self._local = _SourceOf(starts), _LocalOf(starts)
        self._units_per_source = max((int(s.shard.max(initial=0)) for s in self.sources), default=0) + 1
        self.epoch = 0
        self._plans: list[dict[str, int]] | None = None
        self._steps_done = 0  # batches this process delivered in the current layout (num_workers=0)
        self._cached: tuple | None = None
        self._fetcher: BatchFetcher | None = None

    # -- construction helpers ----------------------------------------------------------
    @classmethod
    def mix(cls, items: Sequence[Any], weights: Sequence[float], **kwargs: Any) -> "StreamingDataset":
        """A deterministic weighted mix of datasets or streams (each stream keeps its ``where``).

        Source ``i`` makes up ``weights[i] / sum(weights)`` of every epoch's items
        (``epoch_size`` items, default: all selected samples). An under-weighted source
        rotates through its samples across epochs; an over-weighted one repeats whole
        passes. Other keyword arguments are as for the constructor (a ``where`` given here
        applies to the items that are not streams).
        """
        if len(items) != len(weights):
            raise ConfigError(f"stream mix: {len(items)} sources but {len(weights)} weights")
        default_where = kwargs.pop("where", None)
        datasets, wheres = [], []
        for it in items:
            if isinstance(it, StreamingDataset):
                if len(it.sources) != 1:
                    raise ConfigError("stream mix: each item must be one dataset (not itself a mix)")
                datasets.append(it.sources[0].dataset)
                wheres.append(it.sources[0].where)
            else:
                datasets.append(it)
                wheres.append(default_where)
        return cls(datasets, where=wheres, weights=weights, **kwargs)

    # -- distribution ------------------------------------------------------------------
    def resolve_dist(self) -> tuple[int, int]:
        """(rank, world_size): explicit, else torch.distributed, else env, else (0, 1)."""
        if self._rank is not None and self._world_size is not None:
            r, w = int(self._rank), int(self._world_size)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        r = int(self._rank) if self._rank is not None else r
        w = int(self._world_size) if self._world_size is not None else w
        if not 0 <= r < w:
            raise ConfigError(f"stream rank: {r} is outside world_size {w}")
        if get_worker_info() is None:  # freeze in the main process so workers inherit it
            self._rank, self._world_size = r, w
        return r, w

    # -- the epoch ---------------------------------------------------------------------
    def epoch_items(self, epoch: int | None = None) -> np.ndarray:
        """Global sample indices making up an epoch's list (mixing applied)."""
        e = self.epoch if epoch is None else epoch
        return mix_epoch_items([len(s) for s in self.sources], self.weights, self.seed, e, self.epoch_size)

    def layout(self, epoch: int | None = None, plans: list[dict[str, int]] | None = None,
               world_size: int | None = None) -> tuple[np.ndarray, Layout]:
        """``(items, layout)`` of an epoch for a world size (default: the current ones)."""
        e = self.epoch if epoch is None else epoch
        w = self.resolve_dist()[1] if world_size is None else world_size
        plans = self._plans if plans is None and epoch is None else plans
        key = (e, w, repr(plans))
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        items = _compact(self.epoch_items(e))
        order = _compact(epoch_order(self._units(items), self.seed, e, shuffle=self.shuffle,
                                     block_size=self.shuffle_block_size))
        try:  # int32 positions (when they fit): the epoch's items and layout cost 8 bytes per item
            lay = make_layout(order, _compact(drop_cycle(len(items), self.seed)), e, plans, world_size=w,
                              batch_size=self.batch_size, drop_last=self.drop_last)
        except ValueError as err:
            raise ConfigError(f"stream state: {err}") from None
        self._cached = (key, (items, lay))
        return items, lay

    def _units(self, items: np.ndarray) -> np.ndarray:
        """Read unit (source shard) of each item, for the epoch shuffle."""
        src, local = self._src[items], self._local[items]
        shard = np.zeros(len(items), dtype=np.int64)
        for k, s in enumerate(self.sources):
            m = src == k
            shard[m] = s.shard[local[m]]
        return src * self._units_per_source + shard

    def batch_uids(self, rank: int, step: int, epoch: int | None = None) -> list[str]:
        """uids of one rank's batch (no image I/O; reads the batch's metadata): for checks and debugging."""
        items, lay = self.layout(epoch)
        batch = items[lay.batch(step, rank)]
        src, local = self._src[batch], self._local[batch]
        out: list[str] = [""] * len(batch)
        for k in np.unique(src):
            where = np.flatnonzero(src == k)
            for w, r in zip(where, self.sources[int(k)].rows(local[where])):
                out[w] = str(r["uid"])
        return out

    def worker_batches(self, rank: int, worker: int, num_workers: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, global sample indices)`` of the batches one (rank, worker) produces."""
        items, lay = self.layout()
        for step in lay.worker_steps(worker, num_workers):
            yield step, items[lay.batch(step, rank)]

    # -- reading -----------------------------------------------------------------------
    def fetcher(self) -> BatchFetcher:
        """This process's reader + decoder (built lazily: mmaps and pools are per process)."""
        if self._fetcher is None or self._fetcher.pid != os.getpid():  # forked workers rebuild
            cache = None
            if any(not _local(s.dataset) for s in self.sources):
                cache = ShardCache(self.cache_dir or default_cache_dir(), self.cache_limit_bytes)
            readers = [SourceReader(s, cache, whole_shard_fraction=self.whole_shard_fraction) for s in self.sources]
            self._fetcher = BatchFetcher(readers, self._src, self._local, self.transform, self.caption_column,
                                         self.columns, read_ahead=self.read_ahead, max_pixels=self.max_pixels,
                                         tag_source=len(self.sources) > 1, decode=self.decode)
        return self._fetcher

    def iter_batches(self, worker: int | None = None, num_workers: int | None = None
                     ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(step, samples)`` for this rank and DataLoader worker (detected when not given)."""
        rank, _ = self.resolve_dist()
        if worker is None:
            info = get_worker_info()
            worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        steps = list(self.worker_batches(rank, worker, num_workers or 1))
        decoded = self.fetcher().batches(items for _, items in steps)
        for (step, _), samples in zip(steps, decoded):
            yield step, samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Samples of this rank/worker's share of the rest of the epoch, batch after batch.

        In the main process (``num_workers=0``) progress is tracked here: after the last
        batch the epoch advances, and :meth:`state_dict` reflects delivered batches.
        """
        in_worker = get_worker_info() is not None
        for step, samples in self.iter_batches():
            if not in_worker:
                self._steps_done = step + 1  # counted before handing out the batch's samples
            yield from samples
        if not in_worker:
            self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        """Samples this rank delivers in the rest of the current epoch."""
        _, lay = self.layout()
        return lay.full_steps * self.batch_size + lay.tail

    def num_batches(self) -> int:
        """Batches every rank delivers in the rest of the current epoch."""
        return self.layout()[1].num_steps

    # -- progress ----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch, self._plans, self._steps_done = int(epoch), None, 0

    def state_dict(self, steps: int | None = None) -> dict[str, Any]:
        """Progress as plain JSON-able data (``steps``: batches delivered by each rank in
        the current layout; default: what this process counted)."""
        _, lay = self.layout()
        done = self._steps_done if steps is None else steps
        if done >= lay.num_steps:
            return self._state(self.epoch + 1, [])
        return self._state(self.epoch, lay.plans_after(done))

    def _state(self, epoch: int, plans: list[dict[str, int]]) -> dict[str, Any]:
        return {"version": STATE_VERSION, "epoch": int(epoch), "seed": self.seed,
                "num_items": int(len(self.epoch_items(epoch))), "plans": plans}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from any rank, any world size, any worker count)."""
        try:
            epoch, plans = int(state["epoch"]), [dict(p) for p in state["plans"]]
            seed, n = int(state["seed"]), int(state["num_items"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"stream state: malformed ({e!r})") from None
        if seed != self.seed:
            raise ConfigError(f"stream state: saved with seed {seed}, this stream has seed {self.seed}")
        if n != len(self.epoch_items(epoch)):
            raise ConfigError(f"stream state: saved over {n} items, this selection has {len(self.epoch_items(epoch))}")
        self.epoch, self._plans, self._steps_done = epoch, plans or None, 0
        self.layout()  # validates the plans now, not in a worker

    @property
    def counters(self) -> dict[str, int]:
        """Samples decoded and corrupt members skipped (by reason) in this process."""
        return dict(self._fetcher.counters) if self._fetcher else {}

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_fetcher"] = None  # mmaps, thread pools: rebuilt in each process
        return d


def _compact(a: np.ndarray) -> np.ndarray:
    """Sample positions as int32 when every value fits (the same values, half the memory)."""
    if a.dtype == np.int32 or (len(a) and int(a.max()) >= 2**31):
        return a
    return a.astype(np.int32)


class _SourceOf:
    """``[items]`` -> the source of each global sample index (sources laid end to end)."""

    def __init__(self, starts: np.ndarray):
        self.starts = starts

    def __getitem__(self, items: Any) -> np.ndarray:
        return np.searchsorted(self.starts, np.asarray(items, dtype=np.int64), side="right") - 1


class _LocalOf(_SourceOf):
    """``[items]`` -> each global sample index's position within its source."""

    def __getitem__(self, items: Any) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        return items - self.starts[np.searchsorted(self.starts, items, side="right") - 1]


def _local(ds: Dataset) -> bool:
    from curation.io.fs import is_local

    return is_local(ds.fs)
