"""The download's status histogram comes from the tasks' commit records; only shards committed
by an earlier run are read, by tasks, never on the driver."""
from __future__ import annotations

from curation.download.stage import status_counts
from curation.io.writer import DatasetWriter


def test_status_counts_uses_records_and_reads_the_rest_in_tasks(tmp_path):
    w = DatasetWriter(str(tmp_path / "ds"), stage="test", config={"n": 1})
    statuses = {0: ["success", "http_404"], 1: ["success", "success", "timeout"], 2: ["not_image"]}
    for sid, sts in statuses.items():
        with w.shard(sid) as sw:
            for i, st in enumerate(sts):
                sw.add({"uid": f"u{sid}-{i}", "url": "http://127.0.0.1/x", "caption": "c", "status": st},
                       b"\xff\xd8jpeg" if st == "success" else None)
    w.commit(list(statuses))
    calls: list = []

    def map_fn(fn, items, **kw):
        calls.append(items)
        return [fn(i, **kw) for i in items]

    # shard 0's record says something its file does not: proof that it was not read
    got = status_counts(w, [0, 1, 2], {0: {"success": 7}}, map_fn, shards_per_task=1)
    assert got == {"success": 9, "timeout": 1, "not_image": 1}
    assert calls == [[[1], [2]]]  # the two shards without a record, one task each
    assert status_counts(w, [0, 1, 2]) == {"success": 3, "http_404": 1, "timeout": 1, "not_image": 1}
    calls.clear()
    assert status_counts(w, [0, 1], {0: {"success": 1}, 1: {"success": 2}}, map_fn) == {"success": 3}
    assert calls == []  # every shard has its record: nothing is read
