"""The one stage contract every pipeline step implements.

A stage is a typed config plus ``run(ds, ctx) -> Dataset``. Compute stages (score,
dedup, caption, filter) read ``ds`` and commit a new metadata version through
``ds.new_version(stage, config)``; producing stages (download, reshard) write a new
dataset at ``ctx.output``. Stages are deterministic and commit per shard, so the
executor may rerun them after a crash: committed shards are skipped, the rest redone.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from curation.config import StageConfig
from curation.io import Dataset


@dataclass
class StageStats:
    """What a stage reports: in, out, dropped by reason, seconds (saved in the run record)."""

    stage: str
    samples_in: int = 0
    samples_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    shards: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        rate = self.samples_in / self.seconds if self.seconds > 0 else None
        return {"stage": self.stage, "samples_in": self.samples_in, "samples_out": self.samples_out,
                "dropped": dict(self.dropped), "shards": self.shards, "seconds": round(self.seconds, 3),
                "samples_per_s": round(rate, 1) if rate else None, **self.extra}


@dataclass
class StageContext:
    """What the executor gives a stage.

    Attributes:
        output: root URL where producing stages write their dataset.
        input: the pipeline's input URL (URL list, shards, ...) for a first stage.
        storage_options: fsspec options for every URL of the run.
        progress: ``progress(done_shards, total_shards, samples)`` callback for live bars;
            ``samples`` is the number of samples in the shard(s) just finished (not a total).
        stats: the stage fills it; the executor times it and saves it.
    """

    output: str
    input: str | None = None          # the pipeline's input (first, producing stages read it)
    storage_options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[int, int, int], None] = lambda done, total, samples: None
    stats: StageStats | None = None
    overwrite: bool = False


class Stage(ABC):
    """Base class: subclasses set ``name`` and ``Config`` and implement :meth:`run`."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    produces_dataset: ClassVar[bool] = False  # download / reshard write a new dataset

    def __init__(self, config: StageConfig | dict[str, Any] | None = None):
        if not isinstance(config, StageConfig):
            config = self.Config.parse(config, where=self.name)
        self.config = config

    @abstractmethod
    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        """Run over ``ds`` (None for a first, producing stage) and return the committed result."""

    def __call__(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        ctx.stats = ctx.stats or StageStats(self.name)
        t0 = time.perf_counter()
        out = self.run(ds, ctx)
        ctx.stats.seconds = time.perf_counter() - t0
        return out


# name -> "module:Class"; imported lazily so `curate --help` stays fast.
STAGES: dict[str, str] = {
    "download": "curation.download.stage:DownloadStage",
    "score": "curation.score.stage:ScoreStage",
    "dedup": "curation.dedup.stage:DedupStage",
    "caption": "curation.caption.stage:CaptionStage",
    "filter": "curation.filters.stage:FilterStage",
    "reshard": "curation.io.reshard:ReshardStage",
}


def stage_class(name: str) -> type[Stage]:
    """Resolve a stage name; unknown names raise ConfigError listing the valid ones."""
    import importlib

    from curation.errors import ConfigError

    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    mod, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(mod), cls)
