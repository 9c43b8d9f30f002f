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

from curation.report.analysis import KEPT, stage_of
from curation.report.load import ReportError

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


def _pick_key(truth: pa.Table, meta: pa.Table, where: str) -> str:
    best, best_n = None, 0
    for key in ("uid", "url"):
        if key in truth.column_names and key in meta.column_names:
            n = len(set(truth.column(key).to_pylist()) & set(meta.column(key).to_pylist()))
            if n > best_n:
                best, best_n = key, n
    if best is None:
        raise ReportError(f"{where}: no 'uid' or 'url' values in common with the dataset "
                          f"(truth columns: {', '.join(truth.column_names)})")
    return best


def compare(truth: pa.Table, meta: pa.Table, cats: list[str], where: str) -> TruthReport:
    """Compare per-row removal categories with the truth table.

    Raises:
        ReportError: the truth table has no noise column or no join key in common.
    """
    noise_col = next((c for c in NOISE_COLUMNS if c in truth.column_names), None)
    if noise_col is None:
        raise ReportError(f"{where}: no noise column (expected one of {', '.join(NOISE_COLUMNS)}; "
                          f"has {', '.join(truth.column_names)})")
    key = _pick_key(truth, meta, where)
    by_key = {k: _kinds(v) for k, v in zip(truth.column(key).to_pylist(), truth.column(noise_col).to_pylist())}
    pairs = [(c, by_key[k]) for c, k in zip(cats, meta.column(key).to_pylist()) if k in by_key]
    kind_total = Counter(k for _, ks in pairs for k in ks)
    kind_removed = Counter(k for c, ks in pairs if c != KEPT for k in ks)
    rows = []
    for cat in sorted({c for c, _ in pairs if c != KEPT},
                      key=lambda c: (("download", "dedup", "filter").index(stage_of(c)), c)):
        mine = [ks for c, ks in pairs if c == cat]
        target = set(_match_kinds(cat, list(kind_total), Counter(k for ks in mine for k in ks)))
        hits = sum(1 for ks in mine if ks & target)
        total = sum(1 for _, ks in pairs if ks & target)
        rows.append(TruthRow(cat, len(mine), tuple(sorted(target)), total, hits))
    clean_total = sum(1 for _, ks in pairs if not ks)
    kinds = [(k, kind_total[k], kind_removed[k]) for k in sorted(kind_total)]
    kinds.append((CLEAN, clean_total, sum(1 for c, ks in pairs if not ks and c != KEPT)))
    return TruthReport(key=key, matched=len(pairs), unmatched=len(cats) - len(pairs), rows=rows,
                       kind_recall=kinds)


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
