"""The report's numbers on hand-made tables: categories, funnel, forgetting, truth P/R."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from curation.report.analysis import clip_threshold, forgetting, funnel, rule_counts
from curation.report.load import ReportError
from curation.report.meta import MetaView
from curation.report.truth import compare


def _meta(**cols) -> MetaView:
    n = len(next(iter(cols.values())))
    cols.setdefault("uid", [f"u{i}" for i in range(n)])
    return MetaView.of_table(pa.table(cols))


def categories(view: MetaView) -> list[str]:
    return [r["c"] for r in view.rows("SELECT category AS c FROM m ORDER BY uid")]


def test_category_precedence_download_then_dedup_then_filter():
    meta = _meta(status=["http_404", "success", "success", "success", "success", None],
                 dup_of=["u9", "u4", None, None, None, None],
                 dedup_reason=[None, "exact", None, None, None, None],
                 keep=[False, False, False, True, False, False],
                 reasons=[["clip_score<0.3"], ["clip_score<0.3"], ["a:min_side", "clip_score<0.3"], [], [], None])
    assert categories(meta) == ["download:http_404", "dedup:exact", "filter:a:min_side", "kept",
                                "filter:unspecified", "download:unknown"]


def test_categories_without_stage_columns_keep_every_success():
    assert categories(_meta(status=["success", "timeout"])) == ["kept", "download:timeout"]


def test_funnel_adds_up_and_orders_by_stage():
    f = funnel(Counter(["kept", "filter:x", "dedup:exact", "download:http_404", "filter:x", "kept", "filter:y"]))
    assert f.total == 7 and f.kept == 2
    assert f.steps == [("input", 7), ("downloaded", 6), ("unique", 5), ("kept", 2)]
    assert f.by_reason == [("download:http_404", 1), ("dedup:exact", 1), ("filter:x", 2), ("filter:y", 1)]


def test_rule_counts_count_every_failed_rule_of_downloaded_rows():
    meta = _meta(status=["success", "success", "timeout"], reasons=[["a", "b"], ["b"], ["a"]])
    assert rule_counts(meta) == [("b", 2), ("a", 1)]
    assert clip_threshold(["a:min_side", "clip_score<0.28"]) == 0.28
    assert clip_threshold(["a:min_side"]) is None


def test_dup_groups_largest_first():
    meta = _meta(uid=["a", "b", "c", "d", "e", "f"], dup_of=[None, "a", None, "c", "c", "zz"])

    def uids(groups):
        return [(k["uid"], [d["uid"] for d in dups], n) for k, dups, n in groups]

    assert uids(meta.dup_groups(5, members=5)) == [("c", ["d", "e"], 2), ("a", ["b"], 1)]  # "zz" is not in the table
    assert uids(meta.dup_groups(1, members=1)) == [("c", ["d"], 2)]


def test_samples_are_seeded_bounded_and_in_dataset_order():
    n = 500
    meta = _meta(uid=[f"u{i:04d}" for i in range(n)], shard=[i // 100 for i in range(n)],
                 tar_offset=[(i % 100) * 512 for i in range(n)], status=["success"] * n,
                 clip_score=[i / n for i in range(n)])
    a, b = meta.pick("clip_score > 0.5", 7, "seed-a"), meta.pick("clip_score > 0.5", 7, "seed-a")
    assert a == b and len(a) == 7 and all(r["clip_score"] > 0.5 for r in a)
    assert [(r["shard"], r["tar_offset"]) for r in a] == sorted((r["shard"], r["tar_offset"]) for r in a)
    assert meta.pick("clip_score > 0.5", 7, "seed-b") != a
    assert len(meta.values("clip_score", "true", "h", limit=50)) == 50
    assert sorted(meta.values("clip_score", "true", "h")) == [i / n for i in range(n)]
    st = meta.summary("clip_score", "true")
    assert st["n"] == n and st["lo"] == 0 and st["hi"] == (n - 1) / n and st["med"] == pytest.approx(0.499)


def test_forgetting_matrix_and_backward_transfer():
    rows = [("s1", "s1", 0.6), ("s1", "s2", 0.1), ("s2", "s1", 0.45), ("s2", "s2", 0.62),
            ("s3", "s1", 0.3), ("s3", "s2", 0.5), ("s1", "hold", 0.2), ("s2", "hold", 0.4), ("s3", "hold", 0.35)]
    m = pa.table({"train_slice": [r[0] for r in rows], "eval_slice": [r[1] for r in rows],
                  "metric": ["i2t_r1"] * len(rows), "value": [r[2] for r in rows]})
    fg = forgetting(m, "i2t_r1")
    assert fg.train == ["s1", "s2", "s3"] and fg.evals == ["s1", "s2", "hold"]
    assert fg.matrix[2] == [0.3, 0.5, 0.35]
    # s1: best 0.6 (after s1) -> 0.3; s2: only from its own training on: 0.62 -> 0.5;
    # hold (never trained on): best of all earlier steps 0.4 -> 0.35.
    assert fg.forgetting == pytest.approx([0.3, 0.12, 0.05])
    assert fg.bwt == pytest.approx(((0.3 - 0.6) + (0.5 - 0.62)) / 2)


def test_truth_precision_recall_per_removal_kind():
    meta = _meta(url=["w", "x", "y", "z", "v", "q"], status=["success"] * 6,
                 reasons=[["clip_score<0.3"], ["clip_score<0.3"], [], [], [], []],
                 dedup_reason=[None, None, None, "exact", None, "exact"])
    truth = pa.table({"url": ["w", "x", "y", "z", "v", "other"],
                      "noise": [["mismatched_caption"], [], ["mismatched_caption"], ["exact_duplicate"], None,
                                ["exact_duplicate"]]})
    tr = compare(truth, meta, "truth.parquet")
    assert tr.key == "url" and tr.matched == 5 and tr.unmatched == 1
    by = {r.category: r for r in tr.rows}
    clip = by["filter:clip_score<0.3"]
    assert clip.truth_kinds == ("mismatched_caption",) and clip.precision == 0.5 and clip.recall == 0.5
    dedup = by["dedup:exact"]  # "q" has no truth row: it is left out, not counted as a miss
    assert dedup.removed == 1 and dedup.precision == 1.0 and dedup.recall == 1.0
    assert ("clean", 2, 1) in tr.kind_recall


def test_truth_without_noise_column_names_the_file():
    with pytest.raises(ReportError, match="truth.parquet: no noise column"):
        compare(pa.table({"url": ["w"]}), _meta(url=["w"]), "truth.parquet")
    with pytest.raises(ReportError, match="no 'uid' or 'url' values in common"):
        compare(pa.table({"url": ["nope"], "noise": [["x"]]}), _meta(url=["w"]), "truth.parquet")
