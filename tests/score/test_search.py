"""Text-to-image search returns the planted matches with a project-trained tiny CLIP."""
from __future__ import annotations

import io

import pytest

from curation.errors import ConfigError
from curation.score.search import parse_model_label, search
from curation.score.stage import ScoreStage
from curation.stage import StageContext
from curation.synth.scenes import Scene, render_scene
from tests.helpers import row, write_dataset

COLORS, SHAPES = ("red", "blue", "green", "yellow"), ("circle", "square")


def _png(scene: Scene, seed: int) -> bytes:
    b = io.BytesIO()
    render_scene(scene.color, scene.shape, scene.background, scene.count, width=64, height=64, seed=seed).save(b, "PNG")
    return b.getvalue()


def test_parse_model_label():
    assert parse_model_label("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_model_label("curation-tiny//tmp/ck") == ("curation-tiny", "/tmp/ck")
    assert parse_model_label("curation-tiny/random-init") == ("curation-tiny", None)
    assert parse_model_label("hf-hub:org/name/random-init") == ("hf-hub:org/name", None)


@pytest.mark.slow
def test_search_returns_planted_matches(tmp_path, ray_local):
    from curation.train.seed import train_seed_clip

    pairs, shards = [], [[], []]
    for i in range(160):
        scene = Scene(COLORS[i % 4], SHAPES[(i // 4) % 2], "white", 1)
        img = _png(scene, i)
        pairs.append((img, scene.caption))
        shards[i % 2].append((row(f"u{i}", scene.caption, w=64, h=64, label=scene.class_label), img, "png"))
    ckpt = train_seed_clip(pairs, out_dir=str(tmp_path / "ck"), steps=120, batch_size=64, lr=2e-3, log_every=0)
    ds = write_dataset(str(tmp_path / "ds"), shards)
    out = ScoreStage({"model": "curation-tiny", "pretrained": ckpt, "batch_size": 64})(ds, StageContext(output=ds.url))
    hits = search(out, Scene("red", "circle", "white", 1).caption, k=10)
    labels = [h["uid"] for h in hits]
    assert len(hits) == 10 and [h["rank"] for h in hits] == list(range(1, 11))
    assert all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(9))
    planted = {f"u{i}" for i in range(160) if i % 4 == 0 and (i // 4) % 2 == 0}  # the 20 red circles
    assert len(set(labels) & planted) >= 7, hits
    with pytest.raises(ConfigError, match="k"):
        search(out, "x", k=0)

