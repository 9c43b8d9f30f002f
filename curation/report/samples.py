"""Report sections about samples: the funnel, CLIP-score histograms, sample grids,
duplicate groups and raw vs synthetic captions.

Counts come from DuckDB aggregates over the metadata (:class:`~curation.report.meta.MetaView`);
shown samples and histogram values are seeded, bounded draws, so the same dataset always
renders the same page (reports diff cleanly between runs) and a page over a billion rows
costs what a page over a thousand does.
"""
from __future__ import annotations

from typing import Any

from curation.io import Dataset
from curation.report import html as H
from curation.report import plots
from curation.report.analysis import KEPT, Funnel, clip_threshold, label_of, rule_counts, stage_of
from curation.report.meta import MetaView
from curation.report.thumbs import thumbnails

MAX_REASON_GRIDS = 12  # more removal categories than this are listed, not pictured


def _cat(category: str) -> str:
    return "category = '" + category.replace("'", "''") + "'"


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


def funnel_section(f: Funnel, view: MetaView) -> str:
    """Funnel plot, the removal table, and (when different) every failed rule."""
    if f.total == 0:
        return H.section("funnel", "Funnel of removals", H.absent("The dataset has no samples."))
    rows = [[H.tag(stage_of(c), stage_of(c)), label_of(c), n, H.pct(n, f.total)] for c, n in f.by_reason]
    rows.append([H.tag("kept", "kept"), "", f.kept, H.pct(f.kept, f.total)])
    body = H.plot(plots.funnel_plot(f), "funnel of removals by reason")
    body += H.table(["stage", "reason", "samples", "share"], rows, numeric={2}, raw={0})
    rules = rule_counts(view)
    if rules:
        body += "<h3>Every failed filter rule</h3>"
        body += '<p class="note">A sample that fails several rules counts once per rule here, once above.</p>'
        body += H.table(["rule", "samples failing it"], rules, numeric={1})
    note = ("Each sample is counted once, under the first stage that removed it: "
            "download failures, then duplicates, then the first failed filter rule.")
    return H.section("funnel", "Funnel of removals", body, note)


def scores_section(view: MetaView) -> str:
    """Histograms of CLIP scores, kept vs removed (downloaded samples only)."""
    if not view.has("clip_score"):
        return H.section("clip-scores", "CLIP scores",
                         H.absent("No clip_score column: the dataset was not scored (run `curate score`)."))
    kept_w, removed_w = f"category = '{KEPT}'", f"category <> '{KEPT}' AND category NOT LIKE 'download:%'"
    kept = view.values("clip_score", kept_w, "scores-kept")
    removed = view.values("clip_score", removed_w, "scores-removed")
    if not kept and not removed:
        return H.section("clip-scores", "CLIP scores", H.absent("No sample has a CLIP score."))
    threshold = clip_threshold([r for r, _ in rule_counts(view)])
    body = H.plot(plots.score_histogram(kept, removed, title="CLIP score: kept vs removed",
                                        threshold=threshold), "CLIP score histogram")
    stats = []
    for name, where in (("kept", kept_w), ("removed", removed_w)):
        st = view.summary("clip_score", where)
        stats.append([name, st["n"], st["lo"], st["med"], st["mean"], st["hi"]])
    body += H.table(["", "samples", "min", "median", "mean", "max"], stats, numeric={1, 2, 3, 4, 5})
    models = [m for m, _ in view.value_counts("clip_model", "clip_model IS NOT NULL")] if view.has("clip_model") else []
    note = f"Model: {', '.join(sorted(models))}." if models else None
    return H.section("clip-scores", "CLIP scores", body, note)


def _grid(ds: Dataset, rows: list[dict[str, Any]]) -> str:
    uris = thumbnails(ds, rows)
    cards = []
    for row, uri in zip(rows, uris):
        missing = f"{row.get('status')}: {H.truncate(row.get('error') or row.get('url'), 60)}" \
            if row.get("status") != "success" else "image unreadable"
        cards.append(H.thumb(uri, row.get("caption"), _meta_line(row, row.get("category")), missing=missing))
    return f'<div class="grid">{"".join(cards)}</div>'


def kept_section(ds: Dataset, view: MetaView, f: Funnel, k: int) -> str:
    rows = view.pick(_cat(KEPT), k, "kept")
    if not rows:
        return H.section("samples-kept", "Kept samples", H.absent("No sample was kept."))
    note = f"{len(rows)} of {f.kept:,} kept samples, drawn at random (fixed seed)."
    return H.section("samples-kept", "Kept samples", _grid(ds, rows), note)


def removed_section(ds: Dataset, view: MetaView, f: Funnel, k: int) -> str:
    if not f.by_reason:
        return H.section("samples-removed", "Removed samples, by reason", H.absent("Nothing was removed."))
    body = []
    for cat, n in f.by_reason[:MAX_REASON_GRIDS]:
        rows = view.pick(_cat(cat), k, cat)
        body.append(f"<h3>{H.tag(stage_of(cat), stage_of(cat))} {H.esc(label_of(cat))} "
                    f"<small>({n:,} samples)</small></h3>{_grid(ds, rows)}")
    if len(f.by_reason) > MAX_REASON_GRIDS:
        rest = ", ".join(f"{label_of(c)} ({n:,})" for c, n in f.by_reason[MAX_REASON_GRIDS:])
        body.append(f'<p class="note">Not pictured: {H.esc(rest)}.</p>')
    return H.section("samples-removed", "Removed samples, by reason", "".join(body),
                     f"Up to {k} samples per reason; download failures have no image.")


def duplicates_section(ds: Dataset, view: MetaView, k: int) -> str:
    if not view.has("dup_of"):
        return H.section("duplicates", "Duplicate groups",
                         H.absent("No dup_of column: the dataset was not deduplicated (run `curate dedup`)."))
    groups = view.dup_groups(max_groups=k, members=max(1, k - 1))
    if not groups:
        return H.section("duplicates", "Duplicate groups", H.absent("No duplicates were found."))
    body = []
    for keeper, dups, size in groups:
        rows = [keeper, *dups]
        uris = thumbnails(ds, rows)
        cards = [H.thumb(uris[0], keeper.get("caption"), H.esc("kept · " + _meta_line(keeper)), cls="keeper")]
        cards += [H.thumb(u, r.get("caption"), H.esc(f"{r.get('dedup_reason') or 'duplicate'} · ") + _meta_line(r))
                  for u, r in zip(uris[1:], dups)]
        more = f'<p class="note">+{size - len(dups)} more</p>' if size > len(dups) else ""
        body.append(f'<div class="group">{"".join(cards)}{more}</div>')
    reasons = view.value_counts("dedup_reason", "dedup_reason IS NOT NULL") if view.has("dedup_reason") else []
    note = (f"Largest {len(groups)} groups; the highlighted sample is the one kept. Removed as duplicates: "
            + (", ".join(f"{r} {n:,}" for r, n in reasons) or "none") + ".")
    return H.section("duplicates", "Duplicate groups", "".join(body), note)


def captions_section(ds: Dataset, view: MetaView, k: int) -> str:
    if not view.has("synthetic_caption"):
        return H.section("captions", "Raw vs synthetic captions",
                         H.absent("No synthetic_caption column: captions were not generated (run `curate caption`)."))
    have = "coalesce(synthetic_caption, '') <> ''"
    if not view.count(have):
        return H.section("captions", "Raw vs synthetic captions", H.absent("No sample has a synthetic caption."))
    # Samples whose caption was actually replaced are the interesting ones: show those first.
    src = view.col("caption_source")
    replaced = f"{have} AND {src} IN ('synthetic', 'both')"
    rows = view.pick(replaced, k, "captions")
    if len(rows) < k:
        rows += view.pick(f"{have} AND {src} IS DISTINCT FROM 'synthetic' AND {src} IS DISTINCT FROM 'both'",
                          k - len(rows), "captions-raw")
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
    if view.has("synthetic_clip_score") and view.has("clip_score"):
        raw = view.values("clip_score", have, "captions-raw-scores")
        new = view.values("synthetic_clip_score", "true", "captions-syn-scores")
        if raw or new:
            body += H.plot(plots.score_histogram(new, raw, title="CLIP score: synthetic vs raw caption",
                                                 labels=("synthetic", "raw")), "raw vs synthetic caption scores")
    mix = view.value_counts("caption_source")
    note = "Caption used: " + ", ".join(f"{s or 'unset'} {n:,}" for s, n in mix) + "."
    return H.section("captions", "Raw vs synthetic captions", body, note)
