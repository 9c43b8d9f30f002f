"""``StreamingDataLoader``: a DataLoader that batches inside workers and tracks progress.

Progress inside DataLoader worker processes is invisible to the dataset object the
trainer holds, so (as MosaicML's StreamingDataLoader does) the loader counts the batches
it hands to the training loop. Each worker yields whole batches tagged with their step,
so a corrupt member that is skipped makes one batch shorter but never shifts the
boundaries of the next, and the count is exact: ``state_dict()`` after ``k`` batches
resumes at batch ``k`` (on any world size or worker count).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from curation.errors import ConfigError
from curation.stream.dataset import StreamingDataset


class _Batches(IterableDataset):
    """Worker-side view: ``(step, collated batch or None, worker id, counters)``."""

    def __init__(self, sd: StreamingDataset, collate_fn: Callable):
        self.sd = sd
        self.collate_fn = collate_fn

    def __iter__(self) -> Iterator[tuple[int, Any, int, dict[str, int]]]:
        info = get_worker_info()
        wid = info.id if info else -1
        before = Counter(self.sd.fetcher().counters)
        for step, samples in self.sd.iter_batches():
            batch = self.collate_fn(samples) if samples else None
            yield step, batch, wid, dict(Counter(self.sd.fetcher().counters) - before)

    def __len__(self) -> int:
        return self.sd.num_batches()


class StreamingDataLoader(DataLoader):
    """DataLoader over a :class:`StreamingDataset` with exact, resumable progress.

    Batch size and the remainder policy come from the dataset (``batch_size``,
    ``drop_last``); other DataLoader arguments (``num_workers``, ``pin_memory``,
    ``prefetch_factor``, ``multiprocessing_context``...) pass through. After a full pass
    the dataset moves to the next epoch. A batch whose members were all corrupt is
    counted but not yielded.

    Args:
        dataset: the stream.
        collate_fn: turns a list of sample dicts into a batch (default: torch's).
    """

    def __init__(self, dataset: StreamingDataset, *, collate_fn: Callable | None = None, **kwargs: Any):
        for k in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if k in kwargs:
                raise ConfigError(f"StreamingDataLoader {k}: set it on the StreamingDataset instead")
        if kwargs.get("persistent_workers"):
            raise ConfigError("StreamingDataLoader persistent_workers: not supported "
                              "(workers must see each epoch's state)")
        self.stream = dataset
        self._steps = 0
        self._counters: dict[int, dict[str, int]] = {}  # this pass, per worker
        self._past: Counter[str] = Counter()  # earlier passes
        super().__init__(_Batches(dataset, collate_fn or default_collate), batch_size=None, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        sd = self.stream
        sd.resolve_dist()  # in the main process, before workers copy the dataset
        sd.layout()
        self._steps = 0
        for c in self._counters.values():
            self._past.update(c)
        self._counters = {}
        for step, batch, wid, counters in super().__iter__():
            self._steps = step + 1
            self._counters[wid] = counters
            if batch is not None:
                yield batch
        sd.set_epoch(sd.epoch + 1)
        self._steps = 0

    def state_dict(self) -> dict[str, Any]:
        """Progress after the batches yielded so far (identical on every rank)."""
        return self.stream.state_dict(steps=self._steps)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (saved on any rank, any world size or worker count)."""
        self.stream.load_state_dict(state)
        self._steps = 0

    @property
    def counters(self) -> dict[str, int]:
        """Decoded samples and skipped corrupt members by reason, over all workers and passes."""
        total: Counter[str] = Counter(self._past)
        for c in self._counters.values():
            total.update(c)
        return dict(total)
