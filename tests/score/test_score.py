"""Score stage: exact scores vs open_clip, bad input, row-aligned embeddings, model errors."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from curation.errors import ConfigError
from curation.models import load_clip, save_checkpoint
from curation.score.stage import ScoreStage
from curation.stage import StageContext
from tests.helpers import drawn_image, row, write_dataset

LONG = " ".join(["word"] * 200)  # far past curation-tiny's 16-token context


def _bad_and_odd_samples():
    jpeg = drawn_image(7, (60, 40))
    return [
        (row("grey", "grey"), drawn_image(1, (40, 40), "L", "PNG"), "png"),
        (row("cmyk", "cmyk"), drawn_image(2, (50, 40), "CMYK", "JPEG"), "jpg"),
        (row("palette", "palette"), drawn_image(3, (40, 50), "P", "PNG"), "png"),
        (row("alpha", "alpha"), drawn_image(4, (40, 40), "RGBA", "PNG"), "png"),
        (row("tiny", "one pixel", w=1, h=1), drawn_image(5, (1, 1)), "jpg"),
        (row("long", LONG), drawn_image(6), "jpg"),
        (row("empty", ""), drawn_image(8), "jpg"),
        (row("nullcap", None), drawn_image(9), "jpg"),
        (row("corrupt", "corrupt"), b"\xff\xd8\xff\xe0 this is not a jpeg", "jpg"),
        (row("truncated", "truncated"), jpeg[: len(jpeg) // 2], "jpg"),
        (row("failed", "failed", status="http_404"), None, "jpg"),
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from curation.models import register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(0)
    clip = load_clip("curation-tiny")
    return save_checkpoint(clip.model, "curation-tiny", str(tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, checkpoint, ray_local):
    root = tmp_path_factory.mktemp("scored") / "ds"
    shard0 = [(row(f"a{i}", f"a photo of thing {i}"), drawn_image(i, (48 + i, 40)), "jpg") for i in range(6)]
    shard1 = _bad_and_odd_samples()
    src = write_dataset(str(root), [shard0, shard1])
    tars = {sid: open(os.path.join(root, f"shards/{sid:06d}.tar"), "rb").read() for sid in src.shard_ids}
    out = ScoreStage({"model": "curation-tiny", "pretrained": checkpoint, "batch_size": 4,
                      "draft": False})(src, StageContext(output=str(root)))
    return src, out, tars


def _reference(checkpoint, images: list[bytes], captions: list[str]) -> np.ndarray:
    clip = load_clip("curation-tiny", checkpoint)
    x = torch.stack([clip.preprocess(Image.open(io.BytesIO(b))) for b in images])
    with torch.no_grad():
        fi = F.normalize(clip.model.encode_image(x), dim=-1)
        ft = F.normalize(clip.model.encode_text(clip.tokenizer(captions)), dim=-1)
    return (fi * ft).sum(-1).numpy()


def test_scores_equal_independent_open_clip(scored, checkpoint):
    src, out, _ = scored
    meta = {r["uid"]: r for r in out.read_meta().to_pylist()}
    samples = [s for s in src.iter_samples() if s["uid"] not in ("corrupt", "truncated")]
    ref = _reference(checkpoint, [s["image"] for s in samples], [s["caption"] or "" for s in samples])
    got = np.array([meta[s["uid"]]["clip_score"] for s in samples], dtype=np.float64)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert {meta[s["uid"]]["clip_model"] for s in samples} == {f"curation-tiny/{checkpoint}"}


def test_bad_inputs_get_reasons_and_never_fail_a_batch(scored):
    _, out, _ = scored
    meta = {r["uid"]: r for r in out.read_meta().to_pylist()}
    for uid in ("grey", "cmyk", "palette", "alpha", "tiny", "long", "empty", "nullcap"):
        assert meta[uid]["clip_score"] is not None and meta[uid]["score_error"] is None, uid
    for uid in ("corrupt", "truncated"):
        assert meta[uid]["clip_score"] is None
        assert meta[uid]["score_error"].startswith("decode_error"), meta[uid]["score_error"]
    failed = meta["failed"]
    assert failed["clip_score"] is None and failed["score_error"] is None and failed["clip_model"] is None
    assert out.manifest["history"][-1]["stats"]["dropped"] == {"score_error": 2}


def test_embeddings_row_aligned_normalised_and_duckdb_float_array(scored):
    _, out, _ = scored
    assert out.embeddings["dim"] == 128 and out.embeddings["version"] == out.version
    for sid in out.shard_ids:
        meta, emb = out.read_meta(sid), out.read_embeddings(sid)
        assert emb.column("uid").to_pylist() == meta.column("uid").to_pylist()
        for m, ie, te in zip(meta.to_pylist(), emb.column("image_emb").to_pylist(), emb.column("text_emb").to_pylist()):
            assert (ie is None) == (m["clip_score"] is None)
            if ie is not None:
                ie, te = np.array(ie), np.array(te)
                assert abs(np.linalg.norm(ie) - 1) < 1e-5 and abs(np.linalg.norm(te) - 1) < 1e-5
                assert abs(float(ie @ te) - m["clip_score"]) < 1e-5
    from curation.io.query import query

    typ = query(out, "SELECT typeof(image_emb) AS t FROM embeddings LIMIT 1").column("t")[0].as_py()
    assert typ == "FLOAT[128]"
    n = query(out, "SELECT count(*) AS n FROM embeddings e JOIN samples s USING (uid) WHERE "
                   "abs(array_cosine_similarity(e.image_emb, e.text_emb) - s.clip_score) < 1e-5").column("n")[0].as_py()
    scores = out.read_meta(columns=["clip_score"]).column("clip_score").to_pylist()
    assert n == sum(v is not None for v in scores)  # null vectors are NULL to DuckDB, never zeros


def test_score_never_rewrites_tars(scored):
    src, out, tars = scored
    for sid, data in tars.items():
        assert open(os.path.join(out.root, f"shards/{sid:06d}.tar"), "rb").read() == data
    assert out.version == src.version + 1


def test_unknown_model_lists_valid_names_and_writes_nothing(tmp_path, ray_local):
    ds = write_dataset(str(tmp_path / "ds"), [[(row("a", "x"), drawn_image(0), "jpg")]])
    with pytest.raises(ConfigError) as e:
        ScoreStage({"model": "ViT-Nope-99"})(ds, StageContext(output=ds.url))
    assert "ViT-Nope-99" in str(e.value) and "ViT-B-32" in str(e.value) and "curation-tiny" in str(e.value)
    assert not os.path.exists(tmp_path / "ds" / "meta" / "v2")
    with pytest.raises(ConfigError, match="batch_size"):
        ScoreStage({"model": "curation-tiny", "batch_size": 0})


def test_ray_executor_matches_local_and_open_clip(scored, checkpoint, tmp_path):
    """The Ray Data paths (fused CPU actors; split read tasks -> actor) give the same results as
    the in-process path the small fixture takes."""
    import shutil

    from curation.io import Dataset

    src, local, _ = scored
    assert local.manifest["history"][-1]["stats"]["executor"] == "local"
    want = {r["uid"]: r for r in local.read_meta().to_pylist()}
    for extra, exact in (({"executor": "ray"}, True), ({"executor": "ray", "decode": "torch"}, False)):
        root = tmp_path / f"copy_{len(extra)}"
        shutil.copytree(src.root, root)
        ds = Dataset(str(root), version=src.version)  # the copy also holds the fixture's scored version
        out = ScoreStage({"model": "curation-tiny", "pretrained": checkpoint, "batch_size": 4, "draft": False,
                          "device": "cpu", **extra})(ds, StageContext(output=str(root)))
        stats = out.manifest["history"][-1]["stats"]
        assert stats["executor"] == "ray" and stats["layout"] == ("fused" if exact else "split")
        if not exact:  # the model actors committed both shards themselves, and left no parts behind
            assert stats["split_commits"] == {"in_job": 2, "after_job": 0}
            assert not os.path.exists(os.path.join(root, f"emb/v{out.version}/_parts"))
        got = {r["uid"]: r for r in out.read_meta().to_pylist()}
        assert got.keys() == want.keys()
        for uid, w in want.items():
            g = got[uid]
            assert (g["clip_score"] is None) == (w["clip_score"] is None), uid
            if exact and w["clip_score"] is not None:
                assert abs(g["clip_score"] - w["clip_score"]) < 1e-4, uid
            if exact:
                assert g["score_error"] == w["score_error"], uid
            else:
                assert (g["score_error"] is None) == (w["score_error"] is None), uid
        for sid in out.shard_ids:
            assert out.read_embeddings(sid).column("uid").to_pylist() == out.read_meta(sid).column("uid").to_pylist()


def _drop_last_member(tar_path: str) -> None:
    """Rewrite a tar without its last sample's members (earlier offsets stay valid)."""
    import tarfile

    with tarfile.open(tar_path) as tf:
        members = [(m, f.read()) for m in tf.getmembers() if (f := tf.extractfile(m)) is not None]
    last = members[-1][0].name.split(".", 1)[0]
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tf:
        for m, data in members:
            if m.name.split(".", 1)[0] != last:
                tf.addfile(m, io.BytesIO(data))


@pytest.mark.parametrize("extra", [{"executor": "local"}, {"executor": "ray"}, {"executor": "ray", "decode": "torch"}],
                         ids=["local", "fused", "split"])
def test_missing_tar_member_and_unscorable_shard_get_reasons(tmp_path, checkpoint, ray_local, extra):
    """Every path: a row whose tar member is gone gets ``missing_image``; a shard with nothing
    to score is still committed, all nulls, embeddings row-aligned."""
    from curation.score.assemble import MISSING_IMAGE

    ds = write_dataset(str(tmp_path / "ds"), [
        [(row(f"x{i}", f"thing {i}"), drawn_image(i), "jpg") for i in range(3)],
        [(row(f"y{i}", f"other {i}"), drawn_image(10 + i), "jpg") for i in range(2)],
        [(row("z0", "gone", status="http_404"), None, "jpg"), (row("z1", "gone", status="timeout"), None, "jpg")]])
    _drop_last_member(os.path.join(ds.root, "shards/000000.tar"))
    out = ScoreStage({"model": "curation-tiny", "pretrained": checkpoint, "batch_size": 2, "draft": False,
                      "device": "cpu", **extra})(ds, StageContext(output=ds.url))
    rows = {r["uid"]: r for r in out.read_meta().to_pylist()}
    assert rows["x2"]["score_error"] == MISSING_IMAGE and rows["x2"]["clip_score"] is None
    assert rows["x2"]["clip_model"] == f"curation-tiny/{checkpoint}"
    assert all(rows[u]["clip_score"] is not None and rows[u]["score_error"] is None for u in ("x0", "x1", "y0", "y1"))
    assert all(rows[u]["clip_score"] is None and rows[u]["clip_model"] is None for u in ("z0", "z1"))
    stats = out.manifest["history"][-1]["stats"]
    assert stats["samples_out"] == 4 and stats["dropped"] == {"score_error": 1} and stats["samples_in"] == 7
    for sid in out.shard_ids:
        emb = out.read_embeddings(sid)
        assert emb.column("uid").to_pylist() == out.read_meta(sid).column("uid").to_pylist()
    if extra.get("decode") == "torch":
        assert stats["split_commits"] == {"in_job": 1, "after_job": 2}  # shard 0 never completes in the job


def test_killed_run_resumes_committed_shards_even_with_new_execution_settings(tmp_path, checkpoint, ray_local):
    """A run killed after committing shard 0 (simulated: parent manifest back, shard 1's files
    gone) resumes: shard 0 is not recomputed, even with another batch size, and the result
    equals an uninterrupted run's."""
    import json
    import shutil

    from curation.io import Dataset

    shards = [[(row(f"r{s}_{i}", f"thing {s} {i}"), drawn_image(s * 10 + i), "jpg") for i in range(3)]
              for s in range(2)]
    src = write_dataset(str(tmp_path / "a"), shards)
    shutil.copytree(src.root, tmp_path / "b")
    cfg = {"model": "curation-tiny", "pretrained": checkpoint, "batch_size": 4, "draft": False, "device": "cpu",
           "executor": "local"}
    want = ScoreStage(cfg)(src, StageContext(output=src.url))
    b = Dataset(str(tmp_path / "b"))
    parent_manifest = (tmp_path / "b" / "manifest.json").read_bytes()
    first = ScoreStage(cfg)(b, StageContext(output=b.url))
    v = first.version
    (tmp_path / "b" / "manifest.json").write_bytes(parent_manifest)
    for rel in (f"meta/v{v}/000001.parquet", f"emb/v{v}/000001.parquet", f"meta/v{v}/_records/000001.json"):
        p = tmp_path / "b" / rel
        if p.exists():
            p.unlink()
    kept = (tmp_path / "b" / f"meta/v{v}/000000.parquet").stat().st_mtime_ns
    again = ScoreStage({**cfg, "batch_size": 2})(Dataset(str(tmp_path / "b")), StageContext(output=b.url))
    assert again.version == v
    assert (tmp_path / "b" / f"meta/v{v}/000000.parquet").stat().st_mtime_ns == kept
    assert again.read_meta().to_pylist() == want.read_meta().to_pylist()
    assert again.read_embeddings().to_pylist() == want.read_embeddings().to_pylist()
    stats = again.manifest["history"][-1]["stats"]
    assert stats["resumed_shards"] == 1 and stats["samples_out"] == 6  # the resumed shard's stats are kept
    assert json.loads(json.dumps(stats))["dropped"] == {}
