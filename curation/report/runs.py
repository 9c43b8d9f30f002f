"""Report sections about the run rather than the samples: per-stage throughput, the
forgetting matrix of a continual run, and precision/recall against ground truth."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.report import html as H
from curation.report import plots
from curation.report.analysis import forgetting, label_of, metric_names, primary_metric, stage_of
from curation.report.truth import TruthReport


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def throughput_section(stages: list[dict[str, Any]], source_kind: str) -> str:
    """One row per stage: samples in/out, drops, shards, seconds and samples per second."""
    if not stages:
        return H.section("throughput", "Per-stage throughput", H.absent("No stage records found."))
    rows, rates = [], []
    for st in stages:
        s = st.get("stats") or {}
        dropped = s.get("dropped") or {}
        n_drop = sum(v for v in dropped.values() if isinstance(v, (int, float))) if isinstance(dropped, dict) else None
        secs = _num(s.get("seconds"))
        rate = _num(s.get("samples_per_s"))
        if rate is None and secs and _num(s.get("samples_in")) is not None:
            rate = s["samples_in"] / secs  # older records may carry only the raw counts
        rates.append(rate)
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])[:4]) \
            if isinstance(dropped, dict) else ""
        rows.append([st.get("name") or s.get("stage") or "?", st.get("version"),
                     (st.get("config_hash") or "")[:10], s.get("samples_in"), s.get("samples_out"),
                     n_drop, H.truncate(top, 80), s.get("shards"), secs, rate])
    peak = max([r for r in rates if r] or [1.0])
    for row, rate in zip(rows, rates):
        width = 0 if not rate else max(1, round(120 * rate / peak))
        row.append(f'<div class="bar" style="width:{width}px"></div>' if rate else "")
    body = H.table(["stage", "version", "config", "samples in", "samples out", "dropped", "top drops",
                    "shards", "seconds", "samples/s", ""], rows, numeric={1, 3, 4, 5, 7, 8, 9}, raw={10})
    total = sum(_num((st.get("stats") or {}).get("seconds")) or 0.0 for st in stages)
    note = f"From {source_kind}; total {total:,.1f} s of stage time." if total else f"From {source_kind}."
    return H.section("throughput", "Per-stage throughput", body, note)


def continual_section(metrics: pa.Table | None) -> str:
    """Heat map and table of the train×eval matrix, plus forgetting of every metric."""
    title = "Continual learning: forgetting"
    if metrics is None:
        return H.section("continual", title,
                         H.absent("No continual run in this source (no train/metrics.parquet)."))
    names = metric_names(metrics)
    main = primary_metric(names)
    if main is None:
        return H.section("continual", title, H.absent("train/metrics.parquet has no rows."))
    fg = forgetting(metrics, main)
    body = H.plot(plots.forgetting_heatmap(fg), f"forgetting heat map of {main}")
    body += H.table(["after training on"] + fg.evals,
                    [[t] + row for t, row in zip(fg.train, fg.matrix)], numeric=set(range(1, len(fg.evals) + 1)))
    summary = []
    all_fg = {m: forgetting(metrics, m) for m in names}
    evals = list(dict.fromkeys(e for f in all_fg.values() for e in f.evals))
    for e in evals:
        summary.append([e] + [f.forgetting[f.evals.index(e)] if e in f.evals else None for f in all_fg.values()])
    summary.append(["mean"] + [f.mean_forgetting for f in all_fg.values()])
    summary.append(["backward transfer"] + [f.bwt for f in all_fg.values()])
    body += "<h3>Forgetting per eval slice</h3>"
    body += ('<p class="note">Forgetting = best value after any earlier train slice minus the final '
             "value (higher is worse); backward transfer = mean of final minus just-trained value.</p>")
    body += H.table(["eval slice"] + names, summary, numeric=set(range(1, len(names) + 1)))
    note = f"{len(fg.train)} train slices × {len(fg.evals)} eval slices; heat map of {main}."
    return H.section("continual", title, body, note)


def truth_section(tr: TruthReport | None, truth_path: str | None) -> str:
    """Precision/recall of each removal kind, and recall of each kind of truth noise."""
    title = "Precision / recall against ground truth"
    if tr is None:
        return H.section("truth", title, H.absent(
            "No ground truth given (pass --truth truth.parquet, as written by `curate synth`)."))
    rows = [[H.tag(stage_of(r.category), stage_of(r.category)), label_of(r.category), r.removed,
             ", ".join(r.truth_kinds) or "–", r.truth_total, r.hits, _ratio(r.precision), _ratio(r.recall)]
            for r in tr.rows]
    body = H.table(["stage", "removed as", "removed", "meant to catch", "truth records", "correct",
                    "precision", "recall"], rows, numeric={2, 4, 5, 6, 7}, raw={0})
    body += "<h3>Recall of each kind of noise (removed by any stage)</h3>"
    body += H.table(["truth kind", "records", "removed", "share removed"],
                    [[k, n, rem, H.pct(rem, n)] for k, n, rem in tr.kind_recall], numeric={1, 2})
    note = (f"{truth_path}: joined on {tr.key}; {tr.matched:,} samples matched"
            + (f", {tr.unmatched:,} not in the truth table." if tr.unmatched else ".")
            + " A 'clean' record that was removed is a false positive.")
    return H.section("truth", title, body, note)
