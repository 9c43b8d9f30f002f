"""Resolving what a report is about: a dataset root, or a pipeline run folder.

A run folder (``run.json``) holds ``dataset/`` (curated in place), optionally
``curated/`` (the resharded output) and ``train/metrics.parquet`` (a continual run).
A dataset root (``manifest.json``) is reported on its own; its manifest history
supplies the per-stage statistics a run record would otherwise give.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import CurationError
from curation.io import Dataset
from curation.io.fs import get_fs, join
from curation.report.meta import MetaView
from curation.secrets import redact

# Only the columns the report uses are read: a metadata table may carry many more.
META_COLUMNS = ("uid", "key", "shard", "tar_offset", "tar_size", "url", "caption", "status", "error",
                "width", "height", "sha256", "image_ext", "clip_score", "clip_model", "dup_of",
                "dedup_reason", "synthetic_caption", "synthetic_clip_score", "caption_source",
                "keep", "reasons", "slice")
METRIC_COLUMNS = ("train_slice", "eval_slice", "metric", "value")


class ReportError(CurationError):
    """The report's input (source folder, run record, metrics or truth file) is unusable."""


@dataclass
class ReportInputs:
    """Everything the report reads, loaded once.

    Attributes:
        source: the URL the user gave.
        dataset: the dataset whose samples are shown.
        view: its current metadata as a DuckDB view (only :data:`META_COLUMNS` that exist):
            aggregates and seeded samples, never the whole table in memory.
        run: the parsed ``run.json`` or None for a bare dataset.
        stages: per-stage records ``{"name", "version", "config_hash", "stats"}``.
        curated: the resharded output dataset, if the run has one.
        metrics: ``train/metrics.parquet`` of a continual run, or None.
    """

    source: str
    dataset: Dataset
    view: MetaView
    run: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    curated: Dataset | None = None
    metrics: pa.Table | None = None


def load_inputs(source: str) -> ReportInputs:
    """Open ``source`` (dataset root or run folder) and read what the report needs.

    Raises:
        ReportError: ``source`` is neither a dataset nor a run folder, or ``run.json``
            or ``train/metrics.parquet`` is malformed.
        curation.errors.DatasetError: the dataset itself is broken (names the file).
    """
    fs, root = get_fs(source.rstrip("/"))
    if fs.exists(join(root, "run.json")):
        return _load_run(source.rstrip("/"), fs, root)
    if fs.exists(join(root, "manifest.json")):
        ds = Dataset(source)
        return ReportInputs(source=source, dataset=ds, view=read_meta(ds), stages=history_stages(ds))
    raise ReportError(f"{source}: neither a dataset (no manifest.json) nor a run folder (no run.json)")


def _load_run(source: str, fs, root: str) -> ReportInputs:
    where = join(source, "run.json")
    try:
        run = redact(json.loads(fs.cat_file(join(root, "run.json"))))  # older records may hold secrets
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{where}: malformed JSON ({e})") from None
    if not isinstance(run, dict):
        raise ReportError(f"{where}: top level is not an object")
    if not fs.exists(join(root, "dataset", "manifest.json")):
        raise ReportError(f"{join(source, 'dataset')}: the run has no committed dataset (no manifest.json)")
    ds = Dataset(join(source, "dataset"))
    stages = run.get("stages")
    if stages is None:
        stages = history_stages(ds)
    elif not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ReportError(f"{where}: 'stages' must be a list of objects, got {type(stages).__name__}")
    curated = None
    if fs.exists(join(root, "curated", "manifest.json")):
        curated = Dataset(join(source, "curated"))
    metrics_path = join(root, "train", "metrics.parquet")
    metrics = read_metrics(fs, metrics_path, join(source, "train", "metrics.parquet")) \
        if fs.exists(metrics_path) else None
    return ReportInputs(source=source, dataset=ds, view=read_meta(ds), run=run, stages=stages,
                        curated=curated, metrics=metrics)


def read_meta(ds: Dataset) -> MetaView:
    """The dataset's current metadata as a :class:`MetaView` of the columns the report uses."""
    return MetaView.of_dataset(ds, META_COLUMNS)


def history_stages(ds: Dataset) -> list[dict[str, Any]]:
    """Stage records from the manifest history (oldest first), shaped like ``run.json``'s."""
    return [{"name": h.get("stage"), "version": h.get("version"), "config_hash": h.get("config_hash"),
             "config": redact(h.get("config") or {}), "stats": h.get("stats") or {}} for h in ds.history]


def read_metrics(fs, path: str, where: str) -> pa.Table:
    """Read ``metrics.parquet`` and check it has the train×eval matrix columns."""
    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise ReportError(f"{where}: unreadable Parquet ({e})") from None
    missing = [c for c in METRIC_COLUMNS if c not in table.column_names]
    if missing:
        raise ReportError(f"{where}: missing column(s) {', '.join(missing)} "
                          f"(has {', '.join(table.column_names)})")
    return table


def read_truth(path: str) -> pa.Table:
    """Read a ground-truth Parquet file (``curate synth``'s ``truth.parquet``)."""
    fs, root = get_fs(path)
    try:
        with fs.open(root, "rb") as f:
            return pq.read_table(f)
    except FileNotFoundError:
        raise ReportError(f"{path}: truth file not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise ReportError(f"{path}: unreadable Parquet ({e})") from None


__all__ = ["ReportInputs", "ReportError", "load_inputs", "read_meta", "read_truth", "history_stages"]
