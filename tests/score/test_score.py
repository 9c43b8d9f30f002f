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
from curation.runner.stage import StageContext
from curation.score.stage import ScoreStage
from tests.score.helpers import drawn_image, row, write_dataset

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
