"""Run a pipeline: stages in order on local Ray or a cluster, resumable after ``kill -9``.

Layout of a run folder (``output:``)::

    <output>/<output_subdir>/  a producing stage's dataset (``dataset`` for the ingest,
                               ``curated`` for the resharded result); compute stages add
                               metadata versions to the current dataset
    <output>/run.json          the run record: per stage its fingerprint, config, status,
                               version, stats

The runner knows no stage names: where a stage writes comes from its class facts
(``takes_input``: the first stage reads the pipeline input; ``produces_dataset`` +
``output_subdir``: a new dataset at ``<output>/<output_subdir>``; otherwise a new metadata
version of the current dataset).

Resume: each stage's fingerprint chains the *semantic* dump of its config (execution
settings such as workers, threads or batch sizes excluded) with every earlier one's. A stage
whose fingerprint is recorded as done is skipped (its dataset version is reopened; the
record takes the new execution settings); a semantically changed config reruns that stage
and every later one, never the earlier ones, and only then may a producing stage replace its
old output. A stage that only got new execution settings resumes where it stopped. Inside a
stage, committed shards are skipped (see ``curation/stage``). If a kill lands after a
stage committed its manifest but before the record was updated, the committed version
is adopted rather than recomputed, so a resumed run's manifest equals an uninterrupted
run's apart from timestamps.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from curation.cluster import ensure_ray
from curation.io import Dataset
from curation.io.format import now_iso
from curation.io.fs import atomic_write_bytes, get_fs, join
from curation.runner.spec import Pipeline
from curation.secrets import redact  # no credentials at rest (storage_options in the spec)
from curation.stage import StageContext, StageStats, stage_class

RUN_RECORD = "run.json"


class RunRecord:
    """``<output>/run.json``, rewritten atomically after every state change."""

    def __init__(self, pipeline: Pipeline):
        self.fs, self.root = get_fs(pipeline.output, pipeline.storage_options)
        self.path = join(self.root, RUN_RECORD)
        self.data: dict[str, Any] = {"pipeline": pipeline.name, "stages": [], "spec": pipeline.raw}
        if self.fs.exists(self.path):
            old = json.loads(self.fs.cat_file(self.path))
            self.data["stages"] = old.get("stages", [])
            self.data["started_at"] = old.get("started_at")
        self.data.setdefault("started_at", None)
        self.data["started_at"] = self.data["started_at"] or now_iso()

    def entry(self, i: int) -> dict[str, Any] | None:
        return self.data["stages"][i] if i < len(self.data["stages"]) else None

    def set(self, i: int, entry: dict[str, Any]) -> None:
        # a rerun of stage i invalidates every later stage's record
        self.data["stages"] = self.data["stages"][:i] + [entry]
        self.save()

    def update(self, i: int, entry: dict[str, Any]) -> None:
        """Replace stage i's record in place (same result, e.g. new execution settings): later
        stages stay valid."""
        self.data["stages"][i] = entry
        self.save()

    def save(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        atomic_write_bytes(self.fs, self.path, json.dumps(redact(self.data), indent=1, default=str).encode())


def _adopt(ds: Dataset, stage: str, started_at: str) -> Dataset | None:
    """A version of ``stage`` on top of ``ds`` that a killed attempt committed, if any."""
    current = Dataset(ds.url, ds.storage_options)
    for h in reversed(current.history):
        if h["parent"] == ds.version and h["stage"] == stage and h["created_at"] >= started_at:
            return Dataset(ds.url, ds.storage_options, version=h["version"])
    return None


def run_pipeline(p: Pipeline, *, address: str | None = None,
                 progress: Callable[[str], Callable[[int, int, int], None]] | None = None) -> dict[str, Any]:
    """Run ``p`` to completion (resuming what a previous attempt committed); return the run record."""
    ensure_ray(address or p.ray.get("address"), num_cpus=p.ray.get("num_cpus"))
    record = RunRecord(p)
    fingerprints = p.fingerprints()
    first = stage_class(p.stages[0].stage)
    ds: Dataset | None = None if first.takes_input else Dataset(p.input, p.storage_options)
    for spec, fp in zip(p.stages, fingerprints):
        prev = record.entry(spec.index)
        settings = spec.config.model_dump(mode="json")
        if prev and prev["fingerprint"] == fp and prev["status"] == "done":
            ds = Dataset(prev["dataset"], p.storage_options, version=prev["version"])
            if prev.get("config") != settings:  # only execution settings changed: nothing to redo
                record.update(spec.index, {**prev, "config": settings})
            continue
        cls = stage_class(spec.stage)
        if ds is not None and not cls.produces_dataset and prev and prev["fingerprint"] == fp:
            adopted = _adopt(ds, cls.name, prev["started_at"])
            if adopted is not None:
                ds = adopted
                record.set(spec.index, {**prev, "status": "done", "dataset": ds.url, "version": ds.version,
                                        "config": settings})
                continue
        started = now_iso()
        entry = {"index": spec.index, "stage": spec.stage, "name": spec.name, "fingerprint": fp,
                 "config": settings, "status": "running", "started_at": started}
        record.set(spec.index, entry)
        # replace a producing stage's old output only when what it computes changed (a
        # different semantic fingerprint), never for new execution settings: those resume
        overwrite = bool(cls.produces_dataset and prev is not None and prev["fingerprint"] != fp)
        out = join(p.output.rstrip("/"), cls.output_subdir) if cls.output_subdir else p.output.rstrip("/")
        ctx = StageContext(output=out, input=p.input, storage_options=p.storage_options,
                           progress=progress(spec.name) if progress else (lambda d, t, s: None),
                           stats=StageStats(spec.name), overwrite=overwrite,
                           executor=p.ray.get("executor") or "auto", task_timeout=p.ray.get("task_timeout"))
        ds = cls(spec.config)(ds, ctx)
        record.set(spec.index, {**entry, "status": "done", "finished_at": now_iso(), "dataset": ds.url,
                                "version": ds.version, "stats": ctx.stats.to_dict() if ctx.stats else {}})
    record.data["finished_at"] = now_iso()
    record.save()
    return record.data
