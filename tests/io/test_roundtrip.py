"""The dataset format: round trip, random access, versions, schemas (local and S3)."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.errors import DatasetError, SchemaError
from curation.io import Dataset, DatasetWriter
from curation.io import format as fmt
from curation.io.writer import VersionWriter
from tests.helpers import jpeg_bytes, make_dataset


def _roundtrip(root, so=None):
    ds = make_dataset(root, shards=3, per_shard=4, storage_options=so)
    assert ds.num_samples == 15 and ds.shard_ids == [0, 1, 2]
    meta = ds.read_meta()
    assert meta.num_rows == 15
    assert len(set(meta.column("uid").to_pylist())) == 15
    samples = list(ds.iter_samples())
    assert len(samples) == 12  # failed rows have no image
    for s in samples:
        # random access by offset returns exactly the sequentially read bytes
        assert ds.read_image(s) == s["image"]
        Image.open(io.BytesIO(s["image"])).load()
    failed = [r for r in meta.to_pylist() if r["status"] != "success"]
    assert len(failed) == 3 and all(r["tar_offset"] is None for r in failed)
    return ds


def test_roundtrip_local(tmp_path):
    ds = _roundtrip(str(tmp_path / "ds"))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    fmt.validate_manifest_dict(manifest, "manifest")
    fmt.validate_rows(ds.read_meta().to_pylist(), "meta")


def test_roundtrip_s3(s3_server):
    ds = _roundtrip(s3_server.url("roundtrip"), s3_server.storage_options)
    fs = s3_server.filesystem()
    assert fs.exists(f"{s3_server.bucket}/roundtrip/manifest.json")
    # no temporary objects remain visible after commit
    names = fs.find(f"{s3_server.bucket}/roundtrip")
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".")]
    rows = ds.read_meta().to_pylist()
    assert ds.read_images([r for r in rows if r["tar_offset"] is not None][:3])


def test_webdataset_reads_our_shards(tmp_path):
    import webdataset as wds

    make_dataset(str(tmp_path / "ds"), shards=1, per_shard=3)
    got = list(wds.WebDataset(str(tmp_path / "ds" / "shards" / "000000.tar"), shardshuffle=False))
    assert len(got) == 3
    assert all({"jpg", "txt", "json"} <= set(g) for g in got)
    assert json.loads(got[0]["json"])["uid"] == "s0-i0"


def test_tar_bytes_are_deterministic(tmp_path):
    a = make_dataset(str(tmp_path / "a"))
    make_dataset(str(tmp_path / "b"))
    for sid in a.shard_ids:
        assert (tmp_path / "a" / "shards" / f"{sid:06d}.tar").read_bytes() == \
               (tmp_path / "b" / "shards" / f"{sid:06d}.tar").read_bytes()


def test_new_version_adds_columns_and_keeps_old(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    tar_before = (tmp_path / "ds" / "shards" / "000000.tar").read_bytes()
    vw = VersionWriter(ds, "score", {"model": "x"})
    for sid in vw.pending_shards():
        t = ds.read_meta(sid)
        vw.write_meta(sid, t.append_column("clip_score", pa.array(np.linspace(0, 1, t.num_rows), pa.float32())))
    ds2 = vw.commit(stats={"samples_in": 12})
    assert ds2.version == 2 and "clip_score" in ds2.columns
    assert [h["stage"] for h in ds2.history] == ["test", "score"]
    assert "clip_score" not in Dataset(str(tmp_path / "ds"), version=1).read_meta().column_names
    assert (tmp_path / "ds" / "shards" / "000000.tar").read_bytes() == tar_before


def test_version_rows_must_match_parent(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    vw = VersionWriter(ds, "bad", {})
    t = ds.read_meta(0)
    with pytest.raises(DatasetError, match="uids"):
        vw.write_meta(0, t.slice(1))
    with pytest.raises(DatasetError, match="missing shards"):
        vw.commit()


def test_version_resume_and_changed_config(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"))
    vw = VersionWriter(ds, "score", {"a": 1})
    vw.write_meta(0, ds.read_meta(0))
    again = VersionWriter(Dataset(str(tmp_path / "ds")), "score", {"a": 1})
    assert again.version == vw.version and again.pending_shards() == [1]  # resumed
    other = VersionWriter(Dataset(str(tmp_path / "ds")), "score", {"a": 2})
    assert other.version != vw.version and other.pending_shards() == [0, 1]  # fresh number


def test_embeddings_roundtrip(tmp_path):
    ds = make_dataset(str(tmp_path / "ds"), shards=1, per_shard=3, failures_per_shard=0)
    vw = VersionWriter(ds, "score", {})
    t = ds.read_meta(0)
    emb = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8)
    vw.write_embeddings(0, pa.table({"uid": t.column("uid"), "image_emb": arr, "text_emb": arr}), model="m")
    vw.write_meta(0, t)
    ds2 = vw.commit()
    assert ds2.embeddings == {"version": 2, "dim": 8, "model": "m"}
    got = np.stack(ds2.read_embeddings().column("image_emb").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(got, emb)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x.y"])
def test_unsafe_keys_rejected_on_write(tmp_path, name):
    w = DatasetWriter(str(tmp_path / "ds"), stage="t")
    with pytest.raises(DatasetError, match="invalid sample key"):
        with w.shard(0) as sw:
            sw.add({"uid": "u", "key": name, "status": "success"}, image=jpeg_bytes())
    assert not (tmp_path / "ds" / "shards" / "000000.tar").exists()


def test_unsafe_member_rejected_on_read(tmp_path):
    import tarfile

    from curation.io.dataset import iter_tar_groups

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("ok.jpg", "../../etc/passwd.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
    buf.seek(0)
    with pytest.raises(DatasetError, match="unsafe"):
        list(iter_tar_groups(buf, "evil.tar"))


def test_missing_required_columns_named():
    t = pa.table({"uid": ["a"], "key": ["k"]})
    with pytest.raises(SchemaError, match="missing required column.*shard"):
        fmt.conform_table(t, "x.parquet")


def test_output_guard_refuses_different_run(tmp_path):
    make_dataset(str(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="different"):
        DatasetWriter(str(tmp_path / "ds"), stage="test", config={"other": True})
