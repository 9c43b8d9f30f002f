"""Stage contract v2: what every pipeline step implements, and the per-shard loop they share.

A stage is a typed config plus class facts the runner reads (it knows no stage names):

* ``name``, ``Config`` (a :class:`~curation.config.StageConfig`);
* ``produces_dataset``: it writes a new dataset (download, reshard) instead of a version;
* ``output_subdir``: where in the run folder that dataset goes (``dataset``, ``curated``);
* ``takes_input``: it reads the pipeline's ``input`` (URL list, shards) rather than a dataset.

:class:`ShardStage` (score, dedup's write-out, caption, filter, ...) implements only
``process_shard(state, shard, plan) -> ShardResult``; the base class owns everything else:
pending shards (committed ones are skipped, so a ``kill -9`` costs time, not samples), dispatch
as Ray tasks (or on an actor pool when the stage overrides :meth:`ShardStage.setup`, so a
model loads once per worker), per-shard writes done by the worker itself through
``VersionWriter.attach`` (the driver never holds rows), small commit records back to the
driver, summed stats, progress and the final commit. Stages never import ``ray`` or
``curation.cluster``: other distributed work goes through :meth:`Stage.map`.
"""
from __future__ import annotations

import functools
import json
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Sequence

import pyarrow as pa

from curation import cluster
from curation.config import StageConfig
from curation.errors import ConfigError, DatasetError
from curation.io import Dataset
from curation.io import format as fmt
from curation.io.fs import atomic_write_bytes, join
from curation.io.writer import VersionWriter

Executor = Literal["auto", "ray", "local"]
RECORDS_DIR = "_records"  # meta/v<N>/_records/<shard>.json: a committed shard's commit record


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

    def add(self, stats: dict[str, Any], rows: int = 0) -> None:
        """Add one shard's stats: ``samples_in``/``samples_out`` (default ``rows``), ``dropped``
        (reason -> count), any other key summed into ``extra`` (numbers, or dicts of numbers)."""
        self.shards += 1
        self.samples_in += int(stats.get("samples_in", rows))
        self.samples_out += int(stats.get("samples_out", rows))
        self.dropped.update(stats.get("dropped") or {})
        for k, v in stats.items():
            if k not in ("samples_in", "samples_out", "dropped"):
                self.extra[k] = _sum(self.extra.get(k), v)

    def to_dict(self) -> dict[str, Any]:
        rate = self.samples_in / self.seconds if self.seconds > 0 else None
        return {"stage": self.stage, "samples_in": self.samples_in, "samples_out": self.samples_out,
                "dropped": dict(self.dropped), "shards": self.shards, "seconds": round(self.seconds, 3),
                "samples_per_s": round(rate, 1) if rate else None, **self.extra}


def _sum(a: Any, b: Any) -> Any:
    if a is None:
        return dict(b) if isinstance(b, dict) else b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _sum(a.get(k), b.get(k)) if k in a and k in b else (a.get(k) if k in a else b[k])
                for k in {**a, **b}}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a + b
    return b  # labels (a model name, a method) are not summed: the last shard's value stands


@dataclass
class StageContext:
    """What the runner (or a CLI command) gives a stage.

    Attributes:
        output: root URL where a producing stage writes its dataset.
        input: the pipeline's input (URL list, shards, ...) for a ``takes_input`` stage.
        storage_options: fsspec options for every URL of the run.
        progress: ``progress(done_shards, total_shards, samples)``; ``samples`` is the number
            of samples in the shard(s) just finished (the display adds them up).
        stats: the stage fills it; ``Stage.__call__`` times it, the runner saves it.
        overwrite: replace an existing output of a *different* producing config. Set by an
            explicit user request, or by the runner only when the stage's semantic
            fingerprint changed; never because an execution setting changed.
        executor: ``ray``, ``local`` (in this process) or ``auto`` (the stage decides; see
            :meth:`ShardStage.choose_executor`). A config field ``executor`` wins over it.
        task_timeout: last-resort seconds one shard task may run (None: no limit); past it
            the run fails naming the shard instead of hanging.
    """

    output: str = ""
    input: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[int, int, int], None] = lambda done, total, samples: None
    stats: StageStats | None = None
    overwrite: bool = False
    executor: Executor = "auto"
    task_timeout: float | None = None


class Stage(ABC):
    """Base class: subclasses set ``name``, ``Config`` and the class facts, and implement :meth:`run`."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    produces_dataset: ClassVar[bool] = False
    output_subdir: ClassVar[str | None] = None
    takes_input: ClassVar[bool] = False

    def __init__(self, config: StageConfig | dict[str, Any] | None = None):
        if not isinstance(config, StageConfig):
            config = self.Config.parse(config, where=self.name)
        self.config = config
        self.ctx: StageContext | None = None

    @abstractmethod
    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        """Run over ``ds`` (None for a ``takes_input`` stage) and return the committed result."""

    def __call__(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        ctx.stats = ctx.stats or StageStats(self.name)
        self.ctx = ctx
        t0 = time.perf_counter()
        try:
            out = self.run(ds, ctx)
        finally:
            self.ctx = None
        ctx.stats.seconds = time.perf_counter() - t0
        return out

    def __getstate__(self) -> dict[str, Any]:
        # the stage travels to workers; its context (progress callbacks, stats) stays here
        return {**self.__dict__, "ctx": None}

    # -- execution ------------------------------------------------------------------
    def executor_setting(self) -> Executor:
        """The configured executor: the config's ``executor`` field if set, else the context's."""
        value = getattr(self.config, "executor", None)
        if value in ("ray", "local"):
            return value
        return self.ctx.executor if self.ctx is not None else "auto"

    def task_timeout(self) -> float | None:
        """Last-resort seconds per task: the config's ``task_timeout`` field, else the context's."""
        value = getattr(self.config, "task_timeout", None)
        return value if value is not None else (self.ctx.task_timeout if self.ctx is not None else None)

    def cluster_resources(self) -> dict[str, float]:
        """Total resources of the Ray cluster (``{"CPU": 16.0, "GPU": 1.0}``), for stages that size work."""
        return cluster.cluster_resources()

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, on_done: Callable[[int, Any], None] | None = None,
            num_cpus: float = 1, num_gpus: float = 0, max_in_flight: int | None = None,
            local: bool | None = None, describe: Callable[[Any], str] | None = None,
            whole_dataset: bool = False, **kwargs: Any) -> list[Any]:
        """``[fn(item, **kwargs) for item in items]``, as Ray tasks; results in item order.

        The one way a stage runs distributed work that is not per shard (dedup partitions,
        filter histograms). Tasks are retried when their node is lost, so ``fn`` must be
        deterministic and write only atomically. ``local`` (default: the executor setting is
        ``local``, or there is at most one item) runs in this process instead.
        ``whole_dataset``: ``fn``'s memory grows with the dataset (one task over all of it,
        e.g. an aggregate over every shard's metadata), so even a single item runs as a task,
        never in the driver, unless the executor setting is ``local``.
        """
        if local is None:
            local = self.executor_setting() == "local" or (len(items) <= 1 and not num_gpus and not whole_dataset)
        if local:
            out = []
            for i, item in enumerate(items):
                out.append(fn(item, **kwargs))
                if on_done:
                    on_done(i, out[-1])
            return out
        return cluster.map_tasks(fn, items, on_done=on_done, num_cpus=num_cpus, num_gpus=num_gpus,
                                 max_in_flight=max_in_flight, timeout=self.task_timeout(),
                                 describe=describe, **kwargs)


# ---------------------------------------------------------------------------------------
@dataclass
class Shard:
    """One shard as a worker sees it: the parent version's metadata and lazy access to the rest.

    Attributes:
        id: the shard id.
        meta: every row and column of the parent version, in order.
        dataset: the parent dataset (pinned to the parent version): tar ranges, images.
    """

    id: int
    meta: pa.Table
    dataset: Dataset

    @functools.cached_property
    def _emb(self) -> pa.Table | None:
        return self.dataset.read_embeddings(self.id) if self.dataset.embeddings else None

    def embeddings(self) -> pa.Table | None:
        """The stored embeddings (``uid``, ``image_emb``, ``text_emb``) of this shard, row-aligned
        with :attr:`meta`; None when the dataset has none. Read on first call only."""
        return self._emb


@dataclass
class ShardResult:
    """What ``process_shard`` returns: new columns for the shard's rows, optional embeddings, stats.

    Attributes:
        columns: name -> values (a list or Arrow array, one per row of ``shard.meta``, in
            order). Columns already present are replaced; others are appended in this order.
            Lists of a schema column take its type.
        embeddings: ``uid``, ``image_emb``, ``text_emb`` (fixed-size float lists), row-aligned.
        embedding_model: the model label recorded for the embeddings (default: the table's
            ``model`` schema metadata, else the stage name).
        stats: ``samples_in``/``samples_out`` (default: the shard's rows), ``dropped``
            (reason -> count), and any other counters (numbers or dicts), summed over shards.
    """

    columns: dict[str, Any] = field(default_factory=dict)
    embeddings: pa.Table | None = None
    embedding_model: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def apply(self, meta: pa.Table) -> pa.Table:
        """``meta`` with :attr:`columns` replacing or appended (rows unchanged)."""
        types = fmt.column_types()
        for name, values in self.columns.items():
            if not isinstance(values, (pa.Array, pa.ChunkedArray)):
                values = pa.array(values, type=types.get(name))
            if len(values) != meta.num_rows:
                raise DatasetError(f"column {name!r} has {len(values)} values for {meta.num_rows} rows")
            if name in meta.column_names:
                meta = meta.drop_columns([name])
            meta = meta.append_column(name, values)
        return meta


def record_path(version: int, shard_id: int) -> str:
    """Where a committed shard's commit record lives inside the dataset."""
    return f"meta/v{version}/{RECORDS_DIR}/{shard_id:06d}.json"


@dataclass
class _ShardJob:
    """Everything a worker needs for one shard of one version (sent to Ray once)."""

    stage: "ShardStage"
    ds: Dataset
    version: int
    plan: Any
    run_id: str | None = None  # the driver's lease: a worker of a run that lost it commits nothing

    def run(self, shard_id: int, state: Any) -> dict[str, Any]:
        """Process and commit one shard; return its small commit record."""
        ds = self.ds
        meta = ds.read_meta(shard_id)
        res = self.stage.process_shard(state, Shard(shard_id, meta, ds), self.plan)
        if not isinstance(res, ShardResult):
            raise TypeError(f"{self.stage.name}.process_shard returned {type(res).__name__}, not ShardResult")
        table = res.apply(meta)
        vw = VersionWriter.attach(ds, self.version, run_id=self.run_id)
        emb = None
        if res.embeddings is not None:
            model = res.embedding_model or (res.embeddings.schema.metadata or {}).get(b"model", b"").decode() \
                or self.stage.name
            vw.write_embeddings(shard_id, res.embeddings, model=model)
            emb = vw.embeddings
        record = {"shard": shard_id, "rows": table.num_rows, "stats": res.stats, "embeddings": emb}
        # the record first, the metadata last: a shard whose metadata exists has its record
        atomic_write_bytes(ds.fs, join(ds.root, record_path(self.version, shard_id)),
                           json.dumps(record, default=_json_default).encode())
        vw.write_meta(shard_id, table)
        return record


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    return str(o)


def _run_shard_task(shard_id: int, job: _ShardJob) -> dict[str, Any]:
    return job.run(shard_id, None)


class _ShardWorker:
    """An actor's state: ``stage.setup(plan)`` once, then shards one at a time."""

    def __init__(self, job: _ShardJob):
        self.job = job
        self.state = job.stage.setup(job.plan)

    def run(self, shard_id: int) -> dict[str, Any]:
        return self.job.run(shard_id, self.state)


class ShardStage(Stage):
    """A compute stage: one new metadata version, computed shard by shard by workers.

    Subclasses implement :meth:`process_shard` and optionally :meth:`plan` (driver, once),
    :meth:`setup` (once per worker: overriding it switches dispatch to an actor pool),
    :meth:`version_config` and :meth:`finish`. Class attributes tune the ``auto`` executor:
    ``local_max_samples`` (run in-process when at most this many samples are pending; a
    config field of that name wins) and ``small_cluster_cpus`` (in-process on clusters of
    at most this many CPUs).
    """

    local_max_samples: ClassVar[int] = 0
    small_cluster_cpus: ClassVar[int] = 0

    def plan(self, ds: Dataset, ctx: StageContext) -> Any:
        """Driver-side, once, before anything is written: validate inputs and return a small,
        picklable plan every shard sees (e.g. a global threshold). Raise ConfigError here."""
        return None

    def setup(self, plan: Any) -> Any:
        """Once per worker (an actor, or this process when local): e.g. load a model. The
        return value is passed to every :meth:`process_shard` call on that worker."""
        return None

    @abstractmethod
    def process_shard(self, state: Any, shard: Shard, plan: Any) -> ShardResult:
        """This shard's metadata (+ embeddings) -> new columns. Runs in a Ray task or actor;
        must be deterministic (a retried shard must give the same result)."""

    def version_config(self, ds: Dataset, plan: Any) -> dict[str, Any]:
        """The config recorded for (and hashed into) the new version: by default the config's
        :meth:`~curation.config.StageConfig.semantic_dump`; a resumed version needs the same."""
        return self.config.semantic_dump()

    def finish(self, ds: Dataset, plan: Any, stats: StageStats) -> None:
        """Driver-side, after every shard committed and before the manifest: add to ``stats.extra``."""

    # -- placement ----------------------------------------------------------------------
    def resources(self) -> dict[str, float]:
        """Ray resources per task or actor: the config's ``num_cpus``/``num_gpus`` if it has them."""
        return {"num_cpus": float(getattr(self.config, "num_cpus", 1) or 1),
                "num_gpus": float(getattr(self.config, "num_gpus", 0) or 0)}

    def pool_size(self, n_pending: int) -> int:
        """Actors in the pool: the config's ``actors`` if set, else as many as the cluster fits."""
        configured = getattr(self.config, "actors", None)
        if configured:
            return min(int(configured), n_pending)
        res, per = self.cluster_resources(), self.resources()
        if per["num_gpus"]:
            fits = int(res.get("GPU", 0) // per["num_gpus"])
        else:
            fits = int(res.get("CPU", 1) // max(per["num_cpus"], 1e-9))
        return max(1, min(fits, n_pending))

    def choose_executor(self, ds: Dataset, pending: list[int]) -> Literal["ray", "local"]:
        """``ray`` or ``local`` for this run. ``auto``: local for at most one pending shard,
        for at most ``local_max_samples`` pending samples, or on a cluster of at most
        ``small_cluster_cpus`` CPUs (never when tasks need GPUs)."""
        setting = self.executor_setting()
        if setting != "auto":
            return setting
        if self.resources()["num_gpus"]:
            return "ray"
        if len(pending) <= 1:
            return "local"
        limit = getattr(self.config, "local_max_samples", None)
        limit = self.local_max_samples if limit is None else int(limit)
        if limit:
            wanted = set(pending)
            if sum(s["num_samples"] for s in ds.shards if s["id"] in wanted) <= limit:
                return "local"
        if self.small_cluster_cpus and self.cluster_resources().get("CPU", 0) <= self.small_cluster_cpus:
            return "local"
        return "ray"

    # -- the loop -------------------------------------------------------------------------
    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        if ds is None:
            raise ConfigError(f"{self.name}: needs an input dataset (it cannot be the first stage)")
        plan = self.plan(ds, ctx)
        vw = VersionWriter(ds, self.name, self.version_config(ds, plan))
        pending = vw.pending_shards()
        total = len(ds.shard_ids)
        stats = ctx.stats if ctx.stats is not None else StageStats(self.name)
        embeddings: dict[str, Any] | None = None
        resumed_rows = 0
        waiting = set(pending)
        for rec in self._committed_records(ds, vw.version, [s for s in ds.shard_ids if s not in waiting]):
            stats.add(rec.get("stats") or {}, rec["rows"])
            resumed_rows += rec["rows"]
            embeddings = rec.get("embeddings") or embeddings
        done = total - len(pending)
        if done:
            ctx.progress(done, total, resumed_rows)
        stats.extra["resumed_shards"] = done

        def on_done(_i: int, rec: dict[str, Any]) -> None:
            nonlocal done, embeddings
            done += 1
            stats.add(rec.get("stats") or {}, rec["rows"])
            embeddings = rec.get("embeddings") or embeddings
            ctx.progress(done, total, rec["rows"])

        job = _ShardJob(self, ds, vw.version, plan, run_id=vw.run_id)
        if pending:
            stats.extra["executor"] = self._dispatch(job, ds, pending, on_done)
        self.finish(ds, plan, stats)
        stats.shards = total
        return vw.commit(stats=stats.to_dict(), embeddings=embeddings)

    def _dispatch(self, job: _ShardJob, ds: Dataset, pending: list[int],
                  on_done: Callable[[int, dict[str, Any]], None]) -> str:
        """Run ``pending`` shards in-process, as Ray tasks, or on an actor pool; return which."""
        executor = self.choose_executor(ds, pending)
        if executor == "local":
            state = self.setup(job.plan)
            for i, sid in enumerate(pending):
                on_done(i, job.run(sid, state))
            return executor
        res = self.resources()
        describe = lambda sid: f"shard {sid} of {ds.url}"  # noqa: E731
        if type(self).setup is not ShardStage.setup:
            cluster.map_actors(functools.partial(_ShardWorker, job), "run", pending,
                               pool_size=self.pool_size(len(pending)), on_done=on_done,
                               timeout=self.task_timeout(), describe=describe,
                               num_cpus=res["num_cpus"], num_gpus=res["num_gpus"])
            return "ray_actors"
        cluster.map_tasks(_run_shard_task, pending, on_done=on_done, timeout=self.task_timeout(),
                          describe=describe, num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], job=job)
        return executor

    @staticmethod
    def _committed_records(ds: Dataset, version: int, shard_ids: list[int]) -> list[dict[str, Any]]:
        """Commit records of shards an earlier attempt committed, fetched in one batched call
        (a shard committed by a pre-v2 stage has none: its rows are counted instead)."""
        if not shard_ids:
            return []
        paths = {sid: join(ds.root, record_path(version, sid)) for sid in shard_ids}
        blobs = ds.fs.cat(list(paths.values()), on_error="omit")
        out = []
        for sid, path in paths.items():
            blob = blobs.get(path) if isinstance(blobs, dict) else None  # a list in: a dict by path out
            if blob is None:
                out.append({"shard": sid, "rows": ds.read_meta(sid, columns=["uid"]).num_rows, "stats": {}})
            else:
                out.append(json.loads(blob))
        return out
