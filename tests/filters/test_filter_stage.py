"""Filter stage: keep/reasons per row, global rules across shards, SQL, tars untouched."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from curation.errors import ConfigError
from curation.filters.stage import FilterStage
from curation.io import Dataset
from curation.io.writer import VersionWriter
from curation.stage import StageContext
from tests.helpers import drawn_image, row, write_dataset

SHARED = "click here to see more"  # boilerplate alt-text: 6 images per shard, 12 in all


def _add_scores(ds: Dataset, scores: dict[str, float]) -> Dataset:
    """A v2 with clip_score (as the score stage would write), without running a model."""
    vw = VersionWriter(ds, "score", {"test": True})
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        vals = [scores.get(u) for u in t.column("uid").to_pylist()]
        vw.write_meta(sid, t.append_column("clip_score", pa.array(vals, type=pa.float32())))
    return vw.commit()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("filt") / "ds")
    shards, scores = [], {}
    for s in range(2):
        samples = [(row(f"s{s}_shared{i}", SHARED, w=300, h=300), drawn_image(i), "jpg") for i in range(6)]
        samples += [(row(f"s{s}_good", "a photo of a red circle on white", w=300, h=300), drawn_image(9), "jpg"),
                    (row(f"s{s}_small", "a photo of a small blue square", w=199, h=300), drawn_image(8), "jpg"),
                    (row(f"s{s}_fail", "a photo of nothing at all", status="http_404"), None, "jpg")]
        shards.append(samples)
    ds = write_dataset(root, shards)
    tars = {sid: open(os.path.join(root, f"shards/{sid:06d}.tar"), "rb").read() for sid in ds.shard_ids}
    for i, uid in enumerate(r["uid"] for r in ds.read_meta().to_pylist() if r["status"] == "success"):
        scores[uid] = [0.5, 0.3, 0.3, 0.2, 0.1][i % 5]
    return _add_scores(ds, scores), tars, scores


def _rows(ds: Dataset) -> dict[str, dict]:
    return {r["uid"]: r for r in ds.read_meta().to_pylist()}


def test_align_shared_alt_text_counts_across_shards(corpus, ray_local):
    ds, tars, _ = corpus
    out = FilterStage({"rules": ["align"]})(ds, StageContext(output=ds.url))
    rows = _rows(out)
    # 12 images share SHARED across the two shards (6 each): > 10 only when counted globally
    assert all("align_shared_alt_text" in rows[f"s{s}_shared{i}"]["reasons"] for s in range(2) for i in range(6))
    assert rows["s0_good"]["keep"] is True and rows["s0_good"]["reasons"] == []
    assert rows["s1_small"]["reasons"] == ["align_min_side"] and rows["s1_small"]["keep"] is False
    assert rows["s0_fail"]["keep"] is False and rows["s0_fail"]["reasons"] == ["http_404"]
    for sid, data in tars.items():  # decisions are metadata: tars byte-identical
        assert open(os.path.join(out.root, f"shards/{sid:06d}.tar"), "rb").read() == data
    assert out.shards == ds.shards


def test_top_fraction_is_global_and_combines_with_sql_and_datacomp(corpus):
    ds, _, scores = corpus
    cfg = {"clip_top_fraction": 0.25, "where": "caption NOT LIKE '%blue%'", "rules": ["datacomp_basic"],
           "parallel": False}
    out = FilterStage(cfg)(ds, StageContext(output=ds.url))
    rows = _rows(out)
    ranked = sorted(scores.values(), reverse=True)                 # N = 16 scored
    threshold = ranked[int(16 * 0.25)]                             # rank 4 -> 0.3 (ties kept)
    assert threshold == pytest.approx(0.3)
    for uid, s in scores.items():
        assert ("clip_top_fraction" in rows[uid]["reasons"]) == (s < 0.3 - 1e-6), uid
    assert "where" in rows["s0_small"]["reasons"] and "datacomp_min_side" in rows["s0_small"]["reasons"]
    assert out.manifest["history"][-1]["stats"]["filter"]["top_fraction_threshold"] == pytest.approx(0.3)
    kept = {u for u, r in rows.items() if r["keep"]}
    assert kept <= {u for u, s in scores.items() if s >= 0.3 - 1e-6}


def test_bad_config_and_sql_write_nothing(corpus, tmp_path):
    ds, _, _ = corpus
    before = sorted(os.listdir(os.path.join(ds.root, "meta")))
    with pytest.raises(ConfigError, match="where"):
        FilterStage({"where": "no_such_column > 1", "parallel": False})(ds, StageContext(output=ds.url))
    with pytest.raises(ConfigError, match="rules"):
        FilterStage({"rules": ["laion_magic"]})
    with pytest.raises(ConfigError, match="clip_top_fraction"):
        FilterStage({"clip_top_fraction": 0})
    assert sorted(os.listdir(os.path.join(ds.root, "meta"))) == before
    unscored = write_dataset(str(tmp_path / "u"), [[(row("a", "a b c d e f"), drawn_image(0), "jpg")]])
    with pytest.raises(ConfigError, match="clip_score"):
        FilterStage({"clip_threshold": 0.28})(unscored, StageContext(output=unscored.url))
