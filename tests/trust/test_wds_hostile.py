"""Hostile WebDataset input: bounded members, per-sample statuses, unique uids (issue 17)."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from curation.download.config import DownloadConfig
from curation.download.inputs import InputError
from curation.download.wds import ingest_rows
from tests.helpers import jpeg_bytes

CAP = 4096


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar(path, members) -> str:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            _add(tf, *m) if isinstance(m, tuple) else _add(tf, **m)
    return str(path)


def _cfg() -> DownloadConfig:
    return DownloadConfig(input="unused", image_size=16, max_bytes=CAP)


def test_hostile_members_get_per_sample_statuses_and_the_rest_is_kept(tmp_path):
    img = jpeg_bytes(size=(20, 20))
    assert len(img) < CAP
    tar = _tar(tmp_path / "hostile.tar", [
        ("good0.jpg", img), ("good0.txt", b"first"), ("good0.json", json.dumps({"uid": "u-good0"}).encode()),
        ("big.jpg", b"\xff" * (CAP + 1)), ("big.txt", b"too big"),
        ("list.jpg", img), ("list.json", b"[1, 2, 3]"),
        ("broken.jpg", img), ("broken.json", b"{not json"),
        ("weird.jpg", img), ("weird.json", json.dumps({"uid": {"a": 1}}).encode()),
        {"name": "link.jpg", "kind": tarfile.SYMTYPE, "link": "/etc/passwd"},
        {"name": "hard.jpg", "kind": tarfile.LNKTYPE, "link": "good0.jpg"},
        {"name": "dev.jpg", "kind": tarfile.CHRTYPE},
        {"name": "fifo.jpg", "kind": tarfile.FIFOTYPE},
        ("../escape.jpg", img),
        ("/abs/olute.jpg", img),
        ("payload.pyd", b"cos\nsystem\n(S'echo pwned'\ntR."),  # never read
        ("good1.jpg", img), ("good1.txt", b"last"),
    ])
    rows = [r for r, _ in ingest_rows({"tar": tar}, _cfg())]
    by_key = {r["source_key"]: r for r in rows}
    assert {k: r["status"] for k, r in by_key.items()} == {
        "good0": "success", "big": "too_large", "list": "bad_metadata", "broken": "bad_metadata",
        "weird": "bad_metadata", "link": "unsafe_member", "hard": "unsafe_member", "dev": "unsafe_member",
        "fifo": "unsafe_member", "../escape": "unsafe_member", "/abs/olute": "unsafe_member",
        "payload": "not_image", "good1": "success"}
    assert by_key["good0"]["uid"] == "u-good0" and by_key["good0"]["caption"] == "first"
    assert by_key["good1"]["caption"] == "last"
    assert "over the 4096-byte cap" in by_key["big"]["error"] and "is a link" in by_key["link"]["error"]
    assert "JSON list, not an object" in by_key["list"]["error"]
    assert all("\n" not in (r["error"] or "") for r in rows)
    assert len({r["uid"] for r in rows}) == len(rows)


def test_duplicate_uids_are_refused(tmp_path):
    img = jpeg_bytes()
    tar = _tar(tmp_path / "dup.tar", [("a.jpg", img), ("a.json", b'{"uid": "same"}'),
                                       ("b.jpg", img), ("b.json", b'{"uid": "same"}')])
    with pytest.raises(InputError, match=r"duplicate uid 'same' \(samples 'a' and 'b'\)"):
        list(ingest_rows({"tar": tar}, _cfg()))
    # a key repeated later in the tar derives the same uid: refused too, not silently merged
    tar2 = _tar(tmp_path / "dupkey.tar", [("k.jpg", img), ("m.jpg", img), ("k.txt", b"again")])
    with pytest.raises(InputError, match="duplicate uid"):
        list(ingest_rows({"tar": tar2}, _cfg()))


def test_hostile_shard_through_the_download_stage(ray_local, tmp_path):
    """End to end: the shard is committed with one row per sample; nothing unsafe is written."""
    from curation.download.stage import download

    img = jpeg_bytes(size=(20, 20))
    src = tmp_path / "in"
    src.mkdir()
    _tar(src / "000.tar", [("ok.jpg", img), ("ok.txt", b"fine"), ("bad.jpg", img), ("bad.json", b'"str"'),
                           {"name": "ln.jpg", "kind": tarfile.SYMTYPE, "link": "/etc/shadow"}, ("ok2.jpg", img)])
    ds = download(str(src / "000.tar"), str(tmp_path / "ds"), input_format="webdataset", image_size=16,
                  max_bytes=CAP)
    rows = ds.read_meta().to_pylist()
    assert sorted((r["source_key"], r["status"]) for r in rows) == [
        ("bad", "bad_metadata"), ("ln", "unsafe_member"), ("ok", "success"), ("ok2", "success")]
    assert sorted(g["source_key"] for g in ds.iter_samples()) == ["ok", "ok2"]


def test_uids_repeated_across_tars_are_refused_before_the_manifest(ray_local, tmp_path):
    """Each tar is checked as it is ingested; a uid that two tars share is caught before the
    manifest is written, so no dataset with duplicate uids ever appears."""
    from curation.download.stage import download

    img = jpeg_bytes(size=(20, 20))
    src = tmp_path / "in"
    src.mkdir()
    _tar(src / "000.tar", [("a.jpg", img), ("a.json", b'{"uid": "shared"}'), ("b.jpg", img)])
    _tar(src / "001.tar", [("c.jpg", img), ("c.json", b'{"uid": "shared"}'), ("d.jpg", img)])
    with pytest.raises(InputError, match=r"repeat uids across tars: 'shared' \(2 times\)"):
        download(str(src / "{000..001}.tar"), str(tmp_path / "ds"), input_format="webdataset", image_size=16,
                 max_bytes=CAP)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    _tar(src / "001.tar", [("c.jpg", img), ("c.json", b'{"uid": "other"}'), ("d.jpg", img)])
    ds = download(str(src / "{000..001}.tar"), str(tmp_path / "ds2"), input_format="webdataset", image_size=16,
                  max_bytes=CAP)
    assert ds.num_samples == 4


def test_the_cross_tar_uid_check_runs_as_a_task_not_in_the_driver(ray_local, tmp_path, monkeypatch):
    """The check reads every uid of the dataset: run in the driver, its memory grew with the rows
    (528 MB at 4M rows; bench/RESULTS.md "Scale"). With Ray it must be a task."""
    from curation import cluster
    from curation.download.stage import download

    calls: list[tuple[str, int]] = []  # what went out as Ray tasks
    real_map = cluster.map_tasks

    def spy(fn, items, **kw):
        calls.append((fn.__name__, len(items)))
        return real_map(fn, items, **kw)

    monkeypatch.setattr(cluster, "map_tasks", spy)
    img = jpeg_bytes(size=(20, 20))
    src = tmp_path / "in"
    src.mkdir()
    _tar(src / "000.tar", [("a.jpg", img), ("b.jpg", img)])
    _tar(src / "001.tar", [("c.jpg", img), ("d.jpg", img)])
    ds = download(str(src / "{000..001}.tar"), str(tmp_path / "ds"), input_format="webdataset", image_size=16,
                  max_bytes=CAP)
    assert ds.num_samples == 4
    checks = [c for c in calls if c[0] == "duplicate_uids"]
    assert checks == [("duplicate_uids", 1)], calls  # one item, still a task, not in-process
