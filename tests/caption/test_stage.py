"""The caption stage on a small dataset: columns, tars untouched, resume, config errors."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pytest

from curation.caption.stage import CaptionStage
from curation.errors import ConfigError
from curation.io.writer import VersionWriter
from curation.stage import StageContext
from tests.caption.conftest import SCENES, scene_caption, write_dataset


def _samples():
    out = []
    for i, sc in enumerate(SCENES * 2):
        out.append({"scene": sc, "caption": scene_caption(*sc) if i % 3 else "click here to buy now"})
    out.insert(5, {"scene": None, "caption": "a broken link"})
    return out


def _tar_digests(ds):
    return {sid: hashlib.sha256(ds.fs.cat_file(ds.tar_path(sid))).hexdigest() for sid in ds.shard_ids}


@pytest.fixture()
def small_ds(tmp_path):
    return write_dataset(str(tmp_path / "ds"), _samples(), per_shard=5)


@pytest.mark.slow
def test_coca_stage_adds_columns_and_never_touches_tars(small_ds, ray_local, tmp_path):
    from curation.caption.coca import randomize_
    from curation.models import load_clip, save_checkpoint

    coca = load_clip("curation-tiny-coca").model
    randomize_(coca, seed=0, std=0.1)
    ckpt = save_checkpoint(coca, "curation-tiny-coca", str(tmp_path / "coca"))
    before = _tar_digests(small_ds)
    meta_before = small_ds.read_meta()
    cfg = {"method": "coca", "model": ckpt, "pretrained": None, "max_new_tokens": 6, "min_new_tokens": 2,
           "clip_model": "curation-tiny", "threshold": -1.0, "batch_size": 4}
    out = CaptionStage(cfg)(small_ds, StageContext(output=small_ds.url))
    assert _tar_digests(out) == before
    meta = out.read_meta()
    assert meta.column("uid").to_pylist() == meta_before.column("uid").to_pylist()
    assert meta.column("caption").to_pylist() == meta_before.column("caption").to_pylist()
    rows = meta.to_pylist()
    for r in rows:
        if r["status"] == "success":
            assert isinstance(r["synthetic_caption"], str) and r["synthetic_caption"]
            assert -1.0 <= r["synthetic_clip_score"] <= 1.0
            assert r["caption_source"] == "raw"   # threshold -1: every raw pair passes
        else:
            assert r["synthetic_caption"] is None and r["caption_source"] == "none"
    assert out.history[-1]["stage"] == "caption"
    assert out.history[-1]["stats"]["caption_source"] == {"raw": 12, "none": 1}


def _fake_score(ds, scores):
    """A metadata version as the score stage writes it (clip_score by curation-tiny)."""
    vw = VersionWriter(ds, "score", {"model": "curation-tiny", "pretrained": None})
    it = iter(scores)
    for sid in ds.shard_ids:
        meta = ds.read_meta(sid)
        vals = [next(it) if st == "success" else None for st in meta.column("status").to_pylist()]
        meta = meta.append_column("clip_score", pa.array(vals, type=pa.float32()))
        meta = meta.append_column("clip_model", pa.array(["curation-tiny/random-init" if v is not None else None
                                                          for v in vals], type=pa.string()))
        vw.write_meta(sid, meta)
    return vw.commit()


@pytest.mark.slow
def test_retrieval_stage_applies_mixing_policy_and_resumes(small_ds, ray_local, tmp_path):
    scored = _fake_score(small_ds, [0.9, -0.9] * 6)   # stored raw scores: half pass, half fail
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(scene_caption(*s) for s in SCENES) + "\n\n")
    stage = CaptionStage({"method": "retrieval", "bank": str(bank), "threshold": 0.0})
    # a crashed earlier run committed shard 0 only: the rerun keeps it and does the rest
    vw = VersionWriter(scored, "caption", {**stage.config.semantic_dump(),
                                        "clip_model": "curation-tiny", "clip_pretrained": None})
    meta0 = scored.read_meta(0)
    n0 = meta0.num_rows
    vw.write_meta(0, meta0.append_column("synthetic_caption", pa.array(["kept"] * n0))
                  .append_column("synthetic_clip_score", pa.array([0.5] * n0, type=pa.float32()))
                  .append_column("caption_source", pa.array(["synthetic"] * n0)))
    out = stage(scored, StageContext(output=scored.url))
    assert out.version == vw.version
    rows = out.read_meta().to_pylist()
    assert [r["synthetic_caption"] for r in rows[:n0]] == ["kept"] * n0
    texts = {scene_caption(*s) for s in SCENES}
    sources = set()
    for r in rows[n0:]:
        if r["status"] != "success":
            assert r["caption_source"] == "none" and r["synthetic_caption"] is None
            continue
        assert r["synthetic_caption"] in texts
        if r["clip_score"] >= 0.0:
            want = "raw"
        else:
            want = "synthetic" if r["synthetic_clip_score"] >= 0.0 else "none"
        assert r["caption_source"] == want
        sources.add(want)
    assert "raw" in sources and len(sources) >= 2


def test_bad_config_fails_before_writing(small_ds, tmp_path):
    with pytest.raises(ConfigError, match="caption.decoding"):
        CaptionStage({"decoding": "nucleus"})
    with pytest.raises(ConfigError, match="does not exist"):
        CaptionStage({"method": "retrieval", "bank": str(tmp_path / "nope.txt"), "clip_model": "curation-tiny"})(
            small_ds, StageContext(output=small_ds.url))
    with pytest.raises(ConfigError, match="no `score` stage"):
        CaptionStage({"method": "retrieval"})(small_ds, StageContext(output=small_ds.url))
    assert not os.path.exists(os.path.join(small_ds.url, "meta", "v2"))


def test_retrieval_views_choose_by_mean_embedding_but_score_the_plain_image(small_ds, tmp_path):
    """With test-time views the candidate is the bank text nearest the mean embedding of the
    image's 8 symmetries, while ``synthetic_clip_score`` stays the plain image's score (so it
    is comparable with ``clip_score`` under the mixing rule)."""
    import torch

    from curation.caption import worker
    from curation.caption.coca import randomize_

    scored = _fake_score(small_ds, [-0.9] * 12)
    bank = tmp_path / "bank.txt"
    texts = [scene_caption(*s) for s in SCENES] + [f"{n} {c} stars on a white background"
                                                   for n in ("two", "three") for c in ("red", "blue", "green")]
    bank.write_text("\n".join(texts))
    config = {"method": "retrieval", "bank": str(bank), "threshold": 0.0, "views": "dihedral"}
    clip = worker._clip("curation-tiny", None, "cpu")  # the worker's cached model: the same weights
    try:
        with torch.no_grad():  # weights varied enough that the views change some choices
            randomize_(clip.model, seed=0, std=0.2)
        cols = worker.caption_shard(0, url=scored.url, storage_options={}, version=scored.version,
                                    config=config, clip_model="curation-tiny", clip_pretrained=None)
        _check_views_choice(scored, clip, cols, texts)
    finally:
        worker._clip.cache_clear()
        worker._bank.cache_clear()


def _check_views_choice(scored, clip, cols, texts):
    import io

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from curation.augment import views

    rows = scored.read_meta(0).to_pylist()
    ok = [i for i, r in enumerate(rows) if r["status"] == "success"]
    assert ok and all(cols["synthetic_caption"][i] is None for i in range(len(rows)) if i not in ok)
    images = torch.stack([clip.preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
                          for b in scored.read_images([rows[i] for i in ok])])
    with torch.no_grad():
        embs = [F.normalize(clip.model.encode_image(v), dim=-1) for v in views(images, "dihedral")]
        text_emb = F.normalize(clip.model.encode_text(clip.tokenizer(texts)), dim=-1)
    assert len(embs) == 8
    want = (F.normalize(torch.stack(embs).mean(0), dim=-1) @ text_emb.T).argmax(1)
    assert (want != (embs[0] @ text_emb.T).argmax(1)).any()  # the views decide, not the plain image
    for j, i in enumerate(ok):
        assert cols["synthetic_caption"][i] == texts[int(want[j])]
        plain = float(embs[0][j] @ text_emb[int(want[j])])
        assert abs(cols["synthetic_clip_score"][i] - plain) < 1e-4
