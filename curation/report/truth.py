"""Precision and recall of each removal kind against a ground-truth table.

The truth table (``curate synth``'s ``truth.parquet``) has one row per input record with
a join key (``uid`` or ``url``; whichever matches more of the dataset's rows) and the
noise kinds applied to that record (a list column, or a comma-separated string; empty
or null means clean). Each removal category is compared with the truth kind it is meant
to catch: a name hint first (``dedup:exact`` ↔ kinds containing "exact", a CLIP-score
rule ↔ "mismatch", ...), otherwise the kind most common among its removals.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from curation.io.query import quote_ident
from curation.report.analysis import KEPT, stage_of
from curation.report.load import ReportError
from curation.report.meta import MetaView

NOISE_COLUMNS = ("noise", "noise_kinds", "noise_kind", "kinds", "labels")
CLEAN = "clean"

# (pattern on the removal category, substrings of the truth kinds it is meant to catch)
_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"^dedup:exact", ("exact",)),
    (r"^dedup:(phash|semantic|near)", ("near",)),
    (r"^dedup:eval", ("contamin", "eval")),
    (r"^dedup:", ("dup",)),
    (r"^filter:.*clip", ("mismatch",)),
    (r"^filter:.*(side|size|tiny|small|pixel|aspect)", ("tiny", "small", "aspect")),
    (r"^filter:.*(text|caption|boiler|lang|word)", ("boilerplate", "empty", "caption")),
    (r"^download:http_", ("broken", "http", "404", "500")),
    (r"^download:(timeout|connection)", ("timeout", "broken", "slow")),
    (r"^download:not_image", ("not_image", "non_image", "nonimage", "non-image")),
    (r"^download:(opted_out|robots)", ("noai", "opt", "robots")),
    (r"^download:too_", ("oversize", "large", "huge")),
)


@dataclass
class TruthRow:
    """Precision/recall of one removal category against one truth kind."""

    category: str
    removed: int
    truth_kinds: tuple[str, ...]  # the kinds it is meant to catch (empty: nothing to compare)
    truth_total: int
    hits: int

    @property
    def precision(self) -> float | None:
        return self.hits / self.removed if self.removed and self.truth_kinds else None

    @property
    def recall(self) -> float | None:
        return self.hits / self.truth_total if self.truth_total else None


@dataclass
class TruthReport:
    """The comparison: per-category rows and per-truth-kind totals."""

    key: str
    matched: int
    unmatched: int
    rows: list[TruthRow]
    kind_recall: list[tuple[str, int, int]]  # (kind, records with it, of those removed by anything)


def _kinds(value) -> frozenset[str]:
    if value is None:
        return frozenset()
    items = value if isinstance(value, (list, tuple)) else re.split(r"[,;|]", str(value))
    return frozenset(str(k).strip() for k in items if k is not None and str(k).strip()
                     and str(k).strip().lower() not in ("clean", "none"))


def _pick_key(truth_cols: list[str], view: MetaView, where: str) -> str:
    best, best_n = None, 0
    for key in ("uid", "url"):
        if key in truth_cols and view.has(key):
            n = int(view.scalar(f"SELECT count(*) FROM (SELECT DISTINCT {key} FROM truth) t "
                                f"JOIN (SELECT DISTINCT {key} FROM m) d USING ({key})") or 0)
            if n > best_n:
                best, best_n = key, n
    if best is None:
        raise ReportError(f"{where}: no 'uid' or 'url' values in common with the dataset "
                          f"(truth columns: {', '.join(truth_cols)})")
    return best


def compare(truth: pa.Table, view: MetaView, where: str) -> TruthReport:
    """Compare each sample's removal category with the truth table, joined in DuckDB.

    Only ``(category, noise value, count)`` groups come back from the join, so the cost on
    the report's side is the number of distinct combinations, not the number of rows.

    Raises:
        ReportError: the truth table has no noise column or no join key in common.
    """
    noise_col = next((c for c in NOISE_COLUMNS if c in truth.column_names), None)
    if noise_col is None:
        raise ReportError(f"{where}: no noise column (expected one of {', '.join(NOISE_COLUMNS)}; "
                          f"has {', '.join(truth.column_names)})")
    view.con.register("truth", truth)
    try:
        key = _pick_key(truth.column_names, view, where)
        # one truth row per key (the first), as a dict lookup would keep the last: keys are unique in practice
        groups = view.rows(f"SELECT d.category AS cat, t.noise AS noise, count(*) AS n FROM m d "
                           f"JOIN (SELECT {key}, any_value({quote_ident(noise_col)}) AS noise FROM truth "
                           f"GROUP BY {key}) t USING ({key}) GROUP BY ALL")
        total = view.count()
    finally:
        view.con.unregister("truth")
    pairs = [(g["cat"], _kinds(g["noise"]), int(g["n"])) for g in groups]
    kind_total: Counter = Counter()
    kind_removed: Counter = Counter()
    for c, ks, n in pairs:
        for k in ks:
            kind_total[k] += n
            if c != KEPT:
                kind_removed[k] += n
    rows = []
    for cat in sorted({c for c, _, _ in pairs if c != KEPT},
                      key=lambda c: (("download", "dedup", "filter").index(stage_of(c)), c)):
        mine = [(ks, n) for c, ks, n in pairs if c == cat]
        among: Counter = Counter()
        for ks, n in mine:
            for k in ks:
                among[k] += n
        target = set(_match_kinds(cat, list(kind_total), among))
        hits = sum(n for ks, n in mine if ks & target)
        truth_total = sum(n for _, ks, n in pairs if ks & target)
        rows.append(TruthRow(cat, sum(n for _, n in mine), tuple(sorted(target)), truth_total, hits))
    matched = sum(n for _, _, n in pairs)
    clean_total = sum(n for _, ks, n in pairs if not ks)
    kinds = [(k, kind_total[k], kind_removed[k]) for k in sorted(kind_total)]
    kinds.append((CLEAN, clean_total, sum(n for c, ks, n in pairs if not ks and c != KEPT)))
    return TruthReport(key=key, matched=matched, unmatched=total - matched, rows=rows, kind_recall=kinds)


def _match_kinds(cat: str, kinds: list[str], among_removed: Counter) -> list[str]:
    """The truth kinds a removal category is meant to catch (see the module docstring).

    A hint may match several kinds (``near_dup_crop``, ``near_dup_resize``): all count.
    """
    for pattern, subs in _HINTS:
        if re.search(pattern, cat):
            cands = [k for k in kinds if any(s in k.lower() for s in subs)]
            if cands:
                return cands
    return [among_removed.most_common(1)[0][0]] if among_removed else []
