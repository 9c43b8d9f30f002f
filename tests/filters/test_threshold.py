"""The distributed top-fraction threshold equals the single-array reference, ties included."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.filters import rules as R
from curation.filters import threshold as T
from curation.io import Dataset
from curation.io.writer import VersionWriter
from tests.helpers import drawn_image, row, write_dataset


def _local_map(fn, items, **kw):
    return [fn(it, **kw) for it in items]


def test_keys_preserve_float_order_and_round_trip():
    vals = np.array([-np.inf, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.28, 0.2800001, 1.0, np.inf], dtype=np.float32)
    keys = T.score_keys(vals)
    assert keys[4] == keys[5]                                  # -0.0 and 0.0 are one value
    assert np.all(np.diff(keys.astype(np.int64))[[i for i in range(len(vals) - 1) if i != 4]] > 0)
    for v, k in zip(vals, keys):
        assert T.key_to_score(int(k)) == (0.0 if v == 0 else float(v))
    assert T.score_keys(np.array([np.nan], dtype=np.float32))[0] > T.score_keys(np.array([np.inf], np.float32))[0]


def _dataset(tmp_path, shards: list[list[float | None]], synthetic: list[list[tuple]] | None = None) -> Dataset:
    """A dataset whose v2 holds the given clip_score per row (None: unscored); rows of a
    shard beyond its scores are failed downloads."""
    src = [[(row(f"s{s}_{i}", "cap"), drawn_image(i, (8, 8)), "jpg") for i in range(len(sc))]
           + [(row(f"s{s}_fail", "cap", status="http_404"), None, "jpg")] for s, sc in enumerate(shards)]
    ds = write_dataset(str(tmp_path / "ds"), src)
    vw = VersionWriter(ds, "score", {"t": 1})
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        t = t.append_column("clip_score", pa.array(shards[sid] + [0.99], type=pa.float32()))  # failed row: ignored
        if synthetic is not None:
            src_col, syn = zip(*(synthetic[sid] + [("raw", None)]))
            t = t.append_column("caption_source", pa.array(src_col, pa.string()))
            t = t.append_column("synthetic_clip_score", pa.array(syn, pa.float32()))
        vw.write_meta(sid, t)
    return vw.commit()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.31, 0.5, -0.0, 0.0, -0.2]),
                                   st.floats(-1, 1, width=32)), max_size=12), min_size=1, max_size=4),
       st.floats(0.01, 1.0))
def test_equals_reference_on_random_shards(tmp_path_factory, shards, f):
    ds = _dataset(tmp_path_factory.mktemp("h"), shards)
    scored = [s for sc in shards for s in sc if s is not None]
    want = R.top_fraction_threshold(scored, f)
    got, n = T.top_fraction_threshold(ds, f, synthetic=False, map_fn=_local_map)
    assert n == len(scored)
    assert got == want
    if want is not None:  # the same rows pass either way
        assert (R.top_fraction(scored, got) == R.top_fraction(scored, want)).all()


def test_wide_spread_bins_and_many_groups(tmp_path):
    rng = np.random.default_rng(3)
    shards = [list(rng.normal(0.25, 0.3, size=40).astype(np.float32).tolist()) for _ in range(6)]
    shards[2] += [0.3] * 15                                    # a heavy tie at a likely threshold
    ds = _dataset(tmp_path, shards)
    scored = [s for sc in shards for s in sc]
    for f in (0.01, 0.1, 0.3, 0.5, 0.9, 1.0):
        want = R.top_fraction_threshold(scored, f)
        for tasks in (1, 4, 256):
            items = T.groups(ds.shard_ids, tasks)
            assert sum(items, []) == ds.shard_ids and len(items) <= tasks
            got, n = T.top_fraction_threshold(ds, f, synthetic=False, map_fn=_local_map, max_tasks=tasks)
            assert (got, n) == (want, len(scored)), (f, tasks)


def test_synthetic_caption_scores_judge_synthetic_rows(tmp_path):
    shards = [[0.1, 0.2, 0.3], [0.4, None]]
    syn = [[("synthetic", 0.9), ("raw", 0.0), (None, None)], [("synthetic", None), ("synthetic", 0.05)]]
    ds = _dataset(tmp_path, shards, syn)
    effective = [0.9, 0.2, 0.3, 0.05]                          # synthetic where chosen; NULL ones unscored
    for f in (0.25, 0.5, 1.0):
        assert T.top_fraction_threshold(ds, f, synthetic=True, map_fn=_local_map) == \
            (R.top_fraction_threshold(effective, f), 4)
    assert T.top_fraction_threshold(ds, 0.5, synthetic=False, map_fn=_local_map)[1] == 4  # clip_score only


def test_nothing_scored_gives_none(tmp_path):
    ds = _dataset(tmp_path, [[None, None], []])
    assert T.top_fraction_threshold(ds, 0.3, synthetic=False, map_fn=_local_map) == (None, 0)
    with pytest.raises(ValueError, match="fraction"):
        T.top_fraction_threshold(ds, 0.0, synthetic=False, map_fn=_local_map)
