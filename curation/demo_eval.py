"""The demo's scorecard: what curation removed, checked against the synthetic ground truth.

Every figure is computed from the committed dataset and ``truth.parquet``; nothing is
assumed. Precision = flagged records that truly have the defect / flagged; recall =
records with the defect that were flagged / records with the defect, counted over the
records where the defect is observable (e.g. caption checks only over downloaded images).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pyarrow.parquet as pq

from curation import status as st
from curation.io import Dataset


def pr(predicted: list[bool], truth: list[bool]) -> dict[str, float]:
    tp = sum(p and t for p, t in zip(predicted, truth))
    n_pred, n_true = sum(predicted), sum(truth)
    return {"precision": tp / n_pred if n_pred else 1.0, "recall": tp / n_true if n_true else 1.0,
            "predicted": n_pred, "truth": n_true}


def removal_reason(row: dict[str, Any]) -> str | None:
    """The first reason a record was removed, in pipeline order (None: kept)."""
    if row["status"] != "success":
        return f"download:{row['status']}"
    if row.get("dedup_reason"):
        return f"dedup:{row['dedup_reason']}"
    if row.get("keep") is False:
        reasons = row.get("reasons") or ["filter"]
        return f"filter:{reasons[0]}"
    return None


def evaluate_run(run_dir: str, corpus: str, threshold: float) -> dict[str, Any]:
    """Funnel and precision/recall of each removal kind for a demo run folder."""
    from curation.dedup.report import evaluate as dedup_eval

    ds = Dataset(os.path.join(run_dir, "dataset"))
    truth = pq.read_table(os.path.join(corpus, "truth.parquet"))
    t = {r["uid"]: r for r in truth.to_pylist()}
    rows = ds.read_meta().to_pylist()
    reasons = [removal_reason(r) for r in rows]
    funnel = {"records_in": len(rows), "downloaded": sum(r["status"] == "success" for r in rows),
              "kept": sum(x is None for x in reasons),
              "removed": dict(Counter(x.split(":")[0] + ":" + x.split(":")[1] for x in reasons if x).most_common())}
    ok = [r for r in rows if r["status"] == "success"]
    out: dict[str, Any] = {"funnel": funnel, "pr": {}, "notes": []}
    matched = sum(r["status"] == t[r["uid"]]["expected_status"] for r in rows)
    out["notes"].append(f"download status equals the ground truth's expected status for {matched}/{len(rows)} records")
    # rows the demo's hash blocklist stopped are scored by the safety step, not as failed downloads
    fetched = [r for r in rows if r["status"] != st.BLOCKED_HASH]
    out["pr"]["failed download"] = pr([r["status"] != "success" for r in fetched],
                                      [t[r["uid"]]["expected_status"] != "success" for r in fetched])
    if "clip_score" in ds.columns:
        scored = [r for r in ok if r.get("clip_score") is not None]
        out["pr"]["mismatched caption (CLIP score)"] = pr(
            [r["clip_score"] < threshold for r in scored], [t[r["uid"]]["caption_mismatched"] for r in scored])
    if "caption_source" in ds.columns:
        out["pr"]["mismatched caption (replaced or dropped)"] = pr(
            [r.get("caption_source") not in ("raw", "both") for r in ok],
            [t[r["uid"]]["caption_mismatched"] for r in ok])
        bad = [r for r in ok if t[r["uid"]]["caption_mismatched"]]
        recaptioned = [r for r in bad if r.get("caption_source") == "synthetic"]
        right = sum(r.get("synthetic_caption") == t[r["uid"]]["true_caption"] for r in recaptioned)
        out["recovered"] = {"mismatched": len(bad), "recaptioned": len(recaptioned), "correct": right}
        out["notes"].append(f"caption enrichment recovered {right} of {len(bad)} mismatched records with their true "
                            f"caption ({len(recaptioned)} recaptioned; retrieval accuracy "
                            f"{right / len(recaptioned) if recaptioned else 0:.2f})")
    if "dedup_reason" in ds.columns:
        d = dedup_eval(ds, truth)
        out["pr"]["exact duplicate"] = d["exact"]
        out["pr"]["near duplicate"] = d["near"]
    if "reasons" in ds.columns:
        text_rules = ("datacomp_words", "datacomp_chars", "datacomp_english")
        flagged = [r.get("caption_source") not in ("raw", "both")
                   or any(x in (r.get("reasons") or []) for x in text_rules) for r in ok]
        out["pr"]["bad caption (CLIP + text rules)"] = pr(flagged, [t[r["uid"]]["caption_mismatched"] for r in ok])
        size_rules = ("datacomp_min_side", "datacomp_aspect")
        out["pr"]["tiny or extreme-aspect image"] = pr(
            [any(x in (r.get("reasons") or []) for x in size_rules) for r in ok],
            [bool({"tiny", "extreme_aspect"} & set(t[r["uid"]]["noise"] or [])) for r in ok])
    return out
