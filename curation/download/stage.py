"""The download stage: URL lists / WebDataset / interleaved docs -> a new dataset, on Ray.

Guarantees:
* one metadata row per input record (``status`` ``success`` or the failure kind, ``error``);
* one input shard -> one output shard, committed atomically by its own Ray task; a rerun
  (after a crash or ``kill -9``) skips committed shards and redoes the rest, and because
  keys, uids and row order depend only on the input, the result equals an uninterrupted run;
* a changed input under an existing, unfinished or finished output is refused (the input's
  content fingerprint is part of the writer's config).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from curation.download.config import DownloadConfig
from curation.download.inputs import InputError, plan_input
from curation.errors import CurationError
from curation.io import Dataset
from curation.io.fs import atomic_write_bytes, get_fs, join
from curation.io.writer import DatasetWriter
from curation.stage import Stage, StageContext

_INPUT_STATE = "_download_input.json"


def plan_shards(cfg: DownloadConfig, storage_options: dict | None) -> tuple[list[dict[str, Any]], str, dict]:
    """Split the input into shard specs. Returns (specs, input fingerprint, input stats)."""
    if cfg.input_format == "webdataset" or (cfg.input_format == "auto" and _looks_like_wds(cfg.input)):
        from curation.download.wds import plan_wds

        return plan_wds(cfg, storage_options)
    return plan_input(cfg, storage_options)  # streamed: row ranges / byte ranges, never the rows


def _looks_like_wds(path: str) -> bool:
    p = path.lower()
    return p.endswith(".tar") or ("{" in p and ".tar" in p) or p.endswith("/")


def check_input_unchanged(out: str, storage_options: dict | None, cfg: DownloadConfig, fp: str) -> None:
    """Refuse to continue an output that was started from different input content."""
    fs, root = get_fs(out, storage_options)
    path = join(root, _INPUT_STATE)
    if not fs.exists(path):
        return
    prev = json.loads(fs.cat_file(path))
    if prev.get("fingerprint") != fp:
        raise InputError(f"{cfg.input}: input changed since {out} was started from it (fingerprint "
                         f"{prev.get('fingerprint')} there, {fp} now); use a new --out or --overwrite")


class DownloadStage(Stage):
    """Fetch, check, resize and encode every input record into a new dataset at ``ctx.output``."""

    name = "download"
    Config = DownloadConfig
    produces_dataset = True
    output_subdir = "dataset"
    takes_input = True

    def run(self, ds: Dataset | None, ctx: StageContext) -> Dataset:
        cfg: DownloadConfig = self.config  # type: ignore[assignment]
        specs, fp, in_stats = plan_shards(cfg, ctx.storage_options)
        if not ctx.overwrite:
            check_input_unchanged(ctx.output, ctx.storage_options, cfg, fp)
        # retry_failed is an action on a finished output, not part of what the shards hold;
        # execution settings (processes, threads, politeness) never are either
        semantic = {k: v for k, v in cfg.semantic_dump().items() if k != "retry_failed"}
        writer_cfg = {**semantic, "input_fingerprint": fp}
        writer = DatasetWriter(ctx.output, stage=self.name, config=writer_cfg,
                               storage_options=ctx.storage_options, overwrite=ctx.overwrite)
        state = join(writer.root, _INPUT_STATE)
        if not writer.fs.exists(state):
            atomic_write_bytes(writer.fs, state, json.dumps({"input": cfg.input, "fingerprint": fp}).encode())
        if writer.is_complete:
            return self._maybe_retry(Dataset(ctx.output, ctx.storage_options), ctx)
        done = [0]
        records: dict[int, dict[str, int]] = {}  # shard -> status counts its task committed

        def on_done(_i: int, res: dict[str, Any]) -> None:
            done[0] += 1
            if "status" in res:
                records[int(res["shard"])] = res["status"]
            ctx.progress(done[0], len(specs), res.get("samples", 0))

        pending = [s for s in specs if not writer.is_committed(s["shard"])]
        done[0] = len(specs) - len(pending)
        self.map(_task, pending, max_in_flight=cfg.processes_count, on_done=on_done,
                 local=self.executor_setting() == "local", describe=lambda spec: f"input shard {spec['shard']}",
                 cfg=cfg.model_dump(mode="json"), out=ctx.output, storage_options=ctx.storage_options,
                 run_id=writer.run_id)
        ids = [s["shard"] for s in specs]
        if any("tar" in s for s in specs):
            _check_unique_uids(self, writer, ids)
        counts = status_counts(writer, ids, records,
                               lambda fn, items, **kw: self.map(fn, items, local=self.executor_setting() == "local",
                                                                **kw))
        out = writer.commit(ids, stats={"status": dict(counts), **in_stats})
        stats = ctx.stats
        if stats is not None:
            stats.samples_in = out.num_samples
            stats.samples_out = sum(sh["num_images"] for sh in out.shards)
            stats.shards = len(specs)
            stats.dropped.update({k: v for k, v in counts.items() if k != "success"})
            stats.extra["input_fingerprint"] = fp
        return self._maybe_retry(out, ctx)

    def _maybe_retry(self, ds: Dataset, ctx: StageContext) -> Dataset:
        if not self.config.retry_failed:  # type: ignore[attr-defined]
            return ds
        from curation.download.retry import retry_failed

        return retry_failed(ctx.output, self.config, ctx.storage_options, map_fn=self.map)  # type: ignore[arg-type]


def status_counts(writer: DatasetWriter, shard_ids: list[int], records: dict[int, dict[str, int]] | None = None,
                  map_fn=None, shards_per_task: int = 64) -> Counter:
    """Status histogram over the committed shards (also after a resumed run).

    ``records``: shard id -> the status counts its task returned when it committed the shard
    in this run (the commit record); those shards are not read again. Shards committed by an
    earlier run (or skipped by a retried task) have none: their ``status`` columns are
    counted by ``map_fn`` tasks (``Stage.map``), ``shards_per_task`` shards each, so the driver
    reads no per-row data; without ``map_fn`` they are read here.
    """
    records = records or {}
    counts: Counter = Counter()
    for sid in shard_ids:
        counts.update(records.get(sid, {}))
    rest = [sid for sid in shard_ids if sid not in records]
    if rest:
        chunks = [rest[i:i + shards_per_task] for i in range(0, len(rest), shards_per_task)]
        kw = {"url": writer.url, "storage_options": writer.storage_options, "version": writer.version}
        for part in (map_fn(_status_task, chunks, **kw) if map_fn else [_status_task(c, **kw) for c in chunks]):
            counts.update(part)
    return counts


def _status_task(shard_ids: list[int], *, url: str, storage_options: dict | None, version: int) -> dict[str, int]:
    """Task: the status histogram of some committed shards' metadata."""
    import pyarrow.parquet as pq

    from curation.io import format as fmt

    fs, root = get_fs(url, storage_options)
    counts: Counter = Counter()
    for sid in shard_ids:
        with fs.open(join(root, fmt.meta_file(version, sid)), "rb") as f:
            counts.update(pq.read_table(f, columns=["status"]).column("status").to_pylist())
    return dict(counts)


def _check_unique_uids(stage: Stage, writer: DatasetWriter, shard_ids: list[int]) -> None:
    """Refuse a WebDataset ingest whose uids (taken from the shards' JSON) repeat across tars,
    before the manifest makes the output a dataset."""
    from curation.download.wds import duplicate_uids
    from curation.io import format as fmt

    files = [fmt.meta_file(writer.version, sid) for sid in shard_ids]
    # a task, never the driver: its DuckDB aggregate grows with the rows (up to its memory limit)
    dups = stage.map(duplicate_uids, [writer.url], whole_dataset=True,
                     storage_options=writer.storage_options, meta_files=files)[0]
    if dups:
        shown = ", ".join(f"{u!r} ({n} times)" for u, n in dups)
        raise InputError(f"{writer.url}: the input shards repeat uids across tars: {shown}; "
                         "uids must be unique (fix the shards' .json uids, or drop them to derive uids)")


def _task(spec, **kwargs):
    from curation.download.tasks import download_shard_task

    return download_shard_task(spec, **kwargs)


def download(input: str, out: str, *, storage_options: dict | None = None, overwrite: bool = False,
             progress=None, **options: Any) -> Dataset:
    """Library entry point: ``download("urls.parquet", "/data/ds", image_size=64, ...)``.

    Options are :class:`DownloadConfig` fields; bad ones raise ConfigError naming the key.
    """
    stage = DownloadStage({"input": input, **options})
    ctx = StageContext(output=out, storage_options=storage_options or {}, overwrite=overwrite)
    if progress is not None:
        ctx.progress = progress
    return stage(None, ctx)


__all__ = ["DownloadStage", "DownloadConfig", "download", "CurationError"]
