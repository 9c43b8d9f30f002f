"""The numbers behind the report: why each sample was removed, the funnel, duplicate
groups, and the forgetting matrix of a continual run.

Every sample gets exactly one *category* (computed in DuckDB by
:class:`curation.report.meta.MetaView`), so the funnel adds up to the input count.
Precedence follows the pipeline order: a failed download (``status != success``) is
reported as such even if later stages also flagged it; then deduplication (``dup_of``
or ``dedup_reason`` set); then the filter (``keep`` false, or any failed rule in
``reasons``), named by the first failed rule. Everything else is ``kept``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from curation.report.meta import MetaView

KEPT = "kept"
STAGE_ORDER = ("download", "dedup", "filter")
_THRESHOLD_RE = re.compile(r"^\s*clip_score\s*<=?\s*(-?[0-9]*\.?[0-9]+)\s*$")


def success_sql(view: MetaView) -> str:
    """SQL that holds for successfully downloaded rows (all rows when there is no status)."""
    return f"{view.col('status')} = 'success'" if view.has("status") else "true"


def stage_of(category: str) -> str:
    """``download``, ``dedup``, ``filter`` or ``kept``."""
    return category.split(":", 1)[0]


def label_of(category: str) -> str:
    """The human part of a category (``clip_score<0.28`` of ``filter:clip_score<0.28``)."""
    return category.split(":", 1)[1] if ":" in category else category


@dataclass
class Funnel:
    """Counts of the curation funnel.

    Attributes:
        total: input records (metadata rows).
        steps: ``(name, remaining)`` after each stage, in pipeline order.
        by_reason: removed count per category, ordered by stage then count.
    """

    total: int
    steps: list[tuple[str, int]]
    by_reason: list[tuple[str, int]]

    @property
    def kept(self) -> int:
        return self.steps[-1][1] if self.steps else self.total


def funnel(counts: Counter) -> Funnel:
    """Build the funnel from samples per category (:meth:`MetaView.category_counts`)."""
    per_stage: Counter = Counter()
    for c, n in counts.items():
        per_stage[stage_of(c)] += n
    total = sum(counts.values())
    remaining = total
    steps = [("input", remaining)]
    for stage, name in zip(STAGE_ORDER, ("downloaded", "unique", "kept")):
        remaining -= per_stage.get(stage, 0)
        steps.append((name, remaining))
    removed = [(c, n) for c, n in counts.items() if c != KEPT and n]
    removed.sort(key=lambda cn: (STAGE_ORDER.index(stage_of(cn[0])), -cn[1], cn[0]))
    return Funnel(total=total, steps=steps, by_reason=removed)


def rule_counts(view: MetaView) -> list[tuple[str, int]]:
    """How often each filter rule failed, over all successfully downloaded rows
    (a sample failing two rules counts for both, unlike the funnel)."""
    return view.list_counts("reasons", where=success_sql(view))


def clip_threshold(rules: list[str]) -> float | None:
    """The CLIP-score threshold named by a rule like ``clip_score<0.28``, if any."""
    for r in rules:
        m = _THRESHOLD_RE.match(r)
        if m:
            return float(m.group(1))
    return None


@dataclass
class Forgetting:
    """The train-slice × eval-slice matrix of one metric and what it implies.

    Attributes:
        metric: the metric name (e.g. ``i2t_r1``).
        train: train slices in training order; rows of ``matrix``.
        evals: eval slices; columns of ``matrix``.
        matrix: ``matrix[i][j]`` = metric on eval slice j after training on slice i (None if absent).
        forgetting: per eval slice, max over earlier train steps (from the step that trained
            on that slice, when it is also a train slice) minus the final value; None where
            no earlier step exists (the last-trained slice, a single step) or values are missing.
        bwt: backward transfer (mean of final minus just-trained value over slices trained
            before the last), when train and eval slices share names; else None.
    """

    metric: str
    train: list[str]
    evals: list[str]
    matrix: list[list[float | None]]
    forgetting: list[float | None]
    bwt: float | None

    @property
    def mean_forgetting(self) -> float | None:
        vals = [f for f in self.forgetting if f is not None]
        return sum(vals) / len(vals) if vals else None


def metric_names(metrics: pa.Table) -> list[str]:
    """Metrics present, in order of first appearance."""
    return list(dict.fromkeys(str(m) for m in metrics.column("metric").to_pylist()))


def forgetting(metrics: pa.Table, metric: str) -> Forgetting:
    """The forgetting matrix of ``metric`` (slices in order of first appearance)."""
    rows = [r for r in metrics.select(["train_slice", "eval_slice", "metric", "value"]).to_pylist()
            if str(r["metric"]) == metric]
    train = list(dict.fromkeys(str(r["train_slice"]) for r in rows))
    evals = list(dict.fromkeys(str(r["eval_slice"]) for r in rows))
    ti, ei = {t: i for i, t in enumerate(train)}, {e: j for j, e in enumerate(evals)}
    matrix: list[list[float | None]] = [[None] * len(evals) for _ in train]
    for r in rows:  # a repeated cell keeps its last value (the latest evaluation)
        matrix[ti[str(r["train_slice"])]][ei[str(r["eval_slice"])]] = \
            None if r["value"] is None else float(r["value"])
    forg: list[float | None] = []
    for j, e in enumerate(evals):
        final = matrix[-1][j] if train else None
        # A slice cannot be forgotten before it was learnt: when the eval slice is also a
        # train slice, only steps from its own training on count (the last one has none).
        start = ti.get(e, 0)
        earlier = [v for i in range(start, len(train) - 1) if (v := matrix[i][j]) is not None]
        forg.append(max(earlier) - final if earlier and final is not None else None)
    bwt = None
    diffs = [last - prev for i, t in enumerate(train[:-1])
             if t in ei and (last := matrix[-1][ei[t]]) is not None and (prev := matrix[i][ei[t]]) is not None]
    if diffs:
        bwt = sum(diffs) / len(diffs)
    return Forgetting(metric=metric, train=train, evals=evals, matrix=matrix, forgetting=forg, bwt=bwt)


def primary_metric(names: list[str]) -> str | None:
    """The metric to plot: image→text R@1 when present, else the first one."""
    for pref in ("i2t_r1", "zeroshot_acc", "t2i_r1"):
        if pref in names:
            return pref
    return names[0] if names else None
