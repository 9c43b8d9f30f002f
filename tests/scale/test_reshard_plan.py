"""Reshard plans by (input shard, row range): the same output as slicing the whole selection."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curation.io.query import query
from curation.io.writer import VersionWriter
from curation.reshard.stage import OutputShard, ReshardConfig, ReshardStage, plan, reads_tables
from curation.stage import StageContext
from tests.helpers import drawn_image, row, write_dataset


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("plan") / "ds")
    shards = [[(row(f"s{s}_{i:02d}", f"cap {s} {i}", status="success" if i % 5 else "http_404"),
                drawn_image(s * 100 + i, (8, 8)) if i % 5 else None, "jpg") for i in range(n)]
              for s, n in enumerate([13, 2, 0, 9])]
    ds = write_dataset(root, shards)
    vw = VersionWriter(ds, "filter", {"t": 1})
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        n = t.num_rows
        t = t.append_column("keep", pa.array([(i * 7 + sid) % 3 != 0 for i in range(n)], pa.bool_()))
        t = t.append_column("clip_score", pa.array([0.1 * i for i in range(n)], pa.float32()))
        vw.write_meta(sid, t)
    return vw.commit()


def _reference(ds, where: str) -> list[str]:
    return query(ds, f"SELECT uid FROM samples WHERE tar_offset IS NOT NULL AND ({where}) "
                     "ORDER BY shard, tar_offset").column("uid").to_pylist()


@pytest.mark.parametrize("where,sql", [(None, "keep"), ("clip_score > 0.25", "clip_score > 0.25"),
                                       ("uid IN (SELECT uid FROM samples WHERE clip_score < 0.5)", "clip_score < 0.5")])
def test_plan_is_ranges_and_output_equals_sliced_selection(decided, tmp_path, where, sql):
    want = _reference(decided, sql)
    p = plan(decided, ReshardConfig(samples_per_shard=3, where=where))
    assert all(isinstance(s, OutputShard) for s in p) and sum(len(s) for s in p) == len(want)
    assert [len(s) for s in p] == [3] * (len(want) // 3) + ([len(want) % 3] if len(want) % 3 else [])
    assert any(len({sid for sid, _, _ in s.ranges}) > 1 for s in p)  # an output shard spans input shards
    assert "keep" in p.columns and p.columns[0] == "uid"
    assert reads_tables(where) == (where is not None and "SELECT" in where)
    out = ReshardStage({"samples_per_shard": 3, "where": where, "output": str(tmp_path / "out")})(
        decided, StageContext(output=str(tmp_path / "out")))
    got = [out.read_meta(s).column("uid").to_pylist() for s in out.shard_ids]
    assert got == [want[i:i + 3] for i in range(0, len(want), 3)]
    first = out.read_meta(0).to_pylist()[0]
    assert first["source_shard"] == 0 and first["raw_caption"] == first["caption"]
    assert out.read_image(first) == decided.read_image(decided.read_meta(0).to_pylist()[
        [r["uid"] for r in decided.read_meta(0).to_pylist()].index(first["uid"])])
