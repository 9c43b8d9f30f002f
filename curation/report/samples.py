"""Report sections about samples: the funnel, CLIP-score histograms, sample grids,
duplicate groups and raw vs synthetic captions.

Shown samples are drawn with a fixed seed, so the same dataset always renders the same
page (reports diff cleanly between runs).
"""
from __future__ import annotations

import random
from collections import Counter
from statistics import mean, median
from typing import Any

import pyarrow as pa

from curation.io import Dataset
from curation.report import html as H
from curation.report import plots
from curation.report.analysis import (KEPT, Funnel, clip_threshold, dup_groups, label_of, rule_counts,
                                      stage_of)
from curation.report.thumbs import thumbnails

MAX_REASON_GRIDS = 12  # more removal categories than this are listed, not pictured


def _pick(indices: list[int], k: int, seed: str) -> list[int]:
    if len(indices) <= k:
        return list(indices)
    return sorted(random.Random(seed).sample(indices, k))


def _meta_line(row: dict[str, Any], cat: str | None = None) -> str:
    parts = []
    if row.get("clip_score") is not None:
        parts.append(f"clip {row['clip_score']:.3f}")
    if row.get("width") and row.get("height"):
        parts.append(f"{row['width']}×{row['height']}")
    if cat and cat != KEPT:
        extra = row.get("reasons") or []
        parts.append(", ".join([label_of(cat)] + [r for r in extra if r != label_of(cat)]))
    if row.get("slice"):
        parts.append(f"slice {row['slice']}")
    return H.esc(" · ".join(str(p) for p in parts))


def funnel_section(f: Funnel, meta: pa.Table) -> str:
    """Funnel plot, the removal table, and (when different) every failed rule."""
    if f.total == 0:
        return H.section("funnel", "Funnel of removals", H.absent("The dataset has no samples."))
    rows = [[H.tag(stage_of(c), stage_of(c)), label_of(c), n, H.pct(n, f.total)] for c, n in f.by_reason]
    rows.append([H.tag("kept", "kept"), "", f.kept, H.pct(f.kept, f.total)])
    body = H.plot(plots.funnel_plot(f), "funnel of removals by reason")
    body += H.table(["stage", "reason", "samples", "share"], rows, numeric={2}, raw={0})
    rules = rule_counts(meta)
    if rules:
        body += "<h3>Every failed filter rule</h3>"
        body += '<p class="note">A sample that fails several rules counts once per rule here, once above.</p>'
        body += H.table(["rule", "samples failing it"], rules, numeric={1})
    note = ("Each sample is counted once, under the first stage that removed it: "
            "download failures, then duplicates, then the first failed filter rule.")
    return H.section("funnel", "Funnel of removals", body, note)


def scores_section(meta: pa.Table, cats: list[str]) -> str:
    """Histograms of CLIP scores, kept vs removed (downloaded samples only)."""
    if "clip_score" not in meta.column_names:
        return H.section("clip-scores", "CLIP scores",
                         H.absent("No clip_score column: the dataset was not scored (run `curate score`)."))
    scores = meta.column("clip_score").to_pylist()
    kept = [s for s, c in zip(scores, cats) if s is not None and c == KEPT]
    removed = [s for s, c in zip(scores, cats) if s is not None and c != KEPT and stage_of(c) != "download"]
    if not kept and not removed:
        return H.section("clip-scores", "CLIP scores", H.absent("No sample has a CLIP score."))
    threshold = clip_threshold([r for r, _ in rule_counts(meta)])
    body = H.plot(plots.score_histogram(kept, removed, title="CLIP score: kept vs removed",
                                        threshold=threshold), "CLIP score histogram")
    stats = [[name, len(v), min(v) if v else None, median(v) if v else None, mean(v) if v else None,
              max(v) if v else None] for name, v in (("kept", kept), ("removed", removed))]
    body += H.table(["", "samples", "min", "median", "mean", "max"], stats, numeric={1, 2, 3, 4, 5})
    models = sorted({m for m in (meta.column("clip_model").to_pylist() if "clip_model" in meta.column_names
                                 else []) if m})
    note = f"Model: {', '.join(models)}." if models else None
    return H.section("clip-scores", "CLIP scores", body, note)


def _grid(ds: Dataset, rows: list[dict[str, Any]], cats: list[str]) -> str:
    uris = thumbnails(ds, rows)
    cards = []
    for row, cat, uri in zip(rows, cats, uris):
        missing = f"{row.get('status')}: {H.truncate(row.get('error') or row.get('url'), 60)}" \
            if row.get("status") != "success" else "image unreadable"
        cards.append(H.thumb(uri, row.get("caption"), _meta_line(row, cat), missing=missing))
    return f'<div class="grid">{"".join(cards)}</div>'


def kept_section(ds: Dataset, meta: pa.Table, cats: list[str], k: int) -> str:
    idx = _pick([i for i, c in enumerate(cats) if c == KEPT], k, "kept")
    if not idx:
        return H.section("samples-kept", "Kept samples", H.absent("No sample was kept."))
    rows = meta.take(idx).to_pylist()
    note = f"{len(idx)} of {cats.count(KEPT):,} kept samples, drawn at random (fixed seed)."
    return H.section("samples-kept", "Kept samples", _grid(ds, rows, [KEPT] * len(rows)), note)


def removed_section(ds: Dataset, meta: pa.Table, cats: list[str], k: int) -> str:
    counts = Counter(c for c in cats if c != KEPT)
    if not counts:
        return H.section("samples-removed", "Removed samples, by reason", H.absent("Nothing was removed."))
    order = sorted(counts, key=lambda c: (("download", "dedup", "filter").index(stage_of(c)), -counts[c], c))
    body = []
    for cat in order[:MAX_REASON_GRIDS]:
        idx = _pick([i for i, c in enumerate(cats) if c == cat], k, cat)
        rows = meta.take(idx).to_pylist()
        body.append(f"<h3>{H.tag(stage_of(cat), stage_of(cat))} {H.esc(label_of(cat))} "
                    f"<small>({counts[cat]:,} samples)</small></h3>{_grid(ds, rows, [cat] * len(rows))}")
    if len(order) > MAX_REASON_GRIDS:
        rest = ", ".join(f"{label_of(c)} ({counts[c]:,})" for c in order[MAX_REASON_GRIDS:])
        body.append(f'<p class="note">Not pictured: {H.esc(rest)}.</p>')
    return H.section("samples-removed", "Removed samples, by reason", "".join(body),
                     f"Up to {k} samples per reason; download failures have no image.")


def duplicates_section(ds: Dataset, meta: pa.Table, k: int) -> str:
    if "dup_of" not in meta.column_names:
        return H.section("duplicates", "Duplicate groups",
                         H.absent("No dup_of column: the dataset was not deduplicated (run `curate dedup`)."))
    groups = dup_groups(meta, max_groups=k)
    if not groups:
        return H.section("duplicates", "Duplicate groups", H.absent("No duplicates were found."))
    body = []
    for keeper, dups in groups:
        idx = [keeper] + dups[: max(1, k - 1)]
        rows = meta.take(idx).to_pylist()
        uris = thumbnails(ds, rows)
        cards = [H.thumb(uris[0], rows[0].get("caption"), H.esc("kept · " + _meta_line(rows[0])), cls="keeper")]
        cards += [H.thumb(u, r.get("caption"), H.esc(f"{r.get('dedup_reason') or 'duplicate'} · ") + _meta_line(r))
                  for u, r in zip(uris[1:], rows[1:])]
        more = f'<p class="note">+{len(dups) - len(idx) + 1} more</p>' if len(dups) > len(idx) - 1 else ""
        body.append(f'<div class="group">{"".join(cards)}{more}</div>')
    reasons = Counter(r for r in (meta.column("dedup_reason").to_pylist()
                                  if "dedup_reason" in meta.column_names else []) if r)
    note = (f"Largest {len(groups)} groups; the highlighted sample is the one kept. Removed as duplicates: "
            + (", ".join(f"{r} {n:,}" for r, n in reasons.most_common()) or "none") + ".")
    return H.section("duplicates", "Duplicate groups", "".join(body), note)


def captions_section(ds: Dataset, meta: pa.Table, cats: list[str], k: int) -> str:
    if "synthetic_caption" not in meta.column_names:
        return H.section("captions", "Raw vs synthetic captions",
                         H.absent("No synthetic_caption column: captions were not generated (run `curate caption`)."))
    syn = meta.column("synthetic_caption").to_pylist()
    src = meta.column("caption_source").to_pylist() if "caption_source" in meta.column_names else [None] * len(syn)
    have = [i for i, s in enumerate(syn) if s]
    if not have:
        return H.section("captions", "Raw vs synthetic captions", H.absent("No sample has a synthetic caption."))
    # Samples whose caption was actually replaced are the interesting ones: show those first.
    replaced = [i for i in have if src[i] in ("synthetic", "both")]
    idx = _pick(replaced, k, "captions")
    chosen = set(replaced)
    idx += _pick([i for i in have if i not in chosen], k - len(idx), "captions-raw")
    rows = meta.take(sorted(idx)).to_pylist()
    uris = thumbnails(ds, rows)
    trows = []
    for r, u in zip(rows, uris):
        raw_s = "" if r.get("clip_score") is None else f" <small>({r['clip_score']:.3f})</small>"
        syn_s = "" if r.get("synthetic_clip_score") is None else f" <small>({r['synthetic_clip_score']:.3f})</small>"
        trows.append([H.image_or_placeholder(u, H.truncate(r.get("caption"), 60)),
                      H.esc(r.get("caption")) + raw_s, H.esc(r.get("synthetic_caption")) + syn_s,
                      H.esc(r.get("caption_source") or "–")])
    body = H.table(["image", "raw caption (CLIP score)", "synthetic caption (CLIP score)", "used"],
                   trows, raw={0, 1, 2, 3})
    if "synthetic_clip_score" in meta.column_names and "clip_score" in meta.column_names:
        raw = [s for s, t in zip(meta.column("clip_score").to_pylist(), syn) if s is not None and t]
        new = [s for s in meta.column("synthetic_clip_score").to_pylist() if s is not None]
        if raw or new:
            body += H.plot(plots.score_histogram(new, raw, title="CLIP score: synthetic vs raw caption",
                                                 labels=("synthetic", "raw")), "raw vs synthetic caption scores")
    mix = Counter(s or "unset" for s in src)
    note = "Caption used: " + ", ".join(f"{s} {n:,}" for s, n in mix.most_common()) + "."
    return H.section("captions", "Raw vs synthetic captions", body, note)
