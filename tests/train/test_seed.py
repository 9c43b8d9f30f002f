"""The seed filter CLIP learns drawn scenes and saves a checkpoint others can load."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curation.errors import ConfigError
from curation.models import load_clip
from curation.train import train_seed_clip
from curation.train.data import build_cache
from curation.train.evaluate import retrieval_metrics
from tests.train.scenes import scenes


@pytest.mark.slow
def test_seed_clip_reduces_loss_and_beats_chance(tmp_path):
    train, held_out = scenes(768, seed=0), scenes(192, seed=1)
    table = pa.table({k: [r[k] for r in train] for k in ("image", "caption")})
    losses: list[float] = []
    folder = train_seed_clip(table, out_dir=str(tmp_path / "seed"), steps=40, batch_size=96, lr=1e-3,
                             history=losses)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    m = load_clip("curation-tiny", pretrained=folder)
    metrics = retrieval_metrics(m.model, build_cache(held_out, m.preprocess, m.tokenizer), m.tokenizer)
    chance = 1 / 12  # 4 colours x 3 shapes
    assert metrics["i2t_r1"] > 2.5 * chance
    assert metrics["t2i_r1"] > 2.5 * chance


def test_seed_clip_same_seed_same_weights(tmp_path):
    import torch
    from safetensors.torch import load_file

    rows = scenes(64, seed=3)
    pairs = [(r["image"], r["caption"]) for r in rows]
    a = train_seed_clip(pairs, out_dir=str(tmp_path / "a"), steps=2, batch_size=32, seed=7)
    b = train_seed_clip(pairs, out_dir=str(tmp_path / "b"), steps=2, batch_size=32, seed=7)
    wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_seed_clip_rejects_non_images(tmp_path):
    with pytest.raises(ConfigError, match="image must be bytes"):
        train_seed_clip([(123, "a red circle")], out_dir=str(tmp_path / "x"), steps=1, batch_size=2)
    with pytest.raises(ConfigError, match="no image-caption pairs"):
        train_seed_clip([], out_dir=str(tmp_path / "y"), steps=1, batch_size=2)


def test_dihedral_augmentation_only_flips_and_transposes():
    """Augmented images are the originals under one of the square's 8 symmetries, drawn
    reproducibly from the generator, and all 8 occur."""
    import torch

    from curation.augment import random_dihedral as dihedral

    x = torch.arange(64 * 3 * 5 * 5, dtype=torch.float32).reshape(64, 3, 5, 5)
    a = dihedral(x, torch.Generator().manual_seed(1))
    b = dihedral(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    seen = set()
    for i in range(64):
        img = x[i]
        variants = [img, img.flip(2), img.flip(1), img.flip(1).flip(2)]
        variants += [v.transpose(1, 2) for v in variants]
        matches = [k for k, v in enumerate(variants) if torch.equal(a[i], v)]
        assert len(matches) == 1, i
        seen.add(matches[0])
    assert seen == set(range(8))


def test_web_copy_is_a_recompressed_crop_of_the_same_size_and_reproducible():
    """A web copy keeps the picture's size and most of its content (a crop of 70-100 % of the
    area, resized back), carries JPEG loss, and the same generator state gives the same copy."""
    import io

    import numpy as np
    from PIL import Image

    from curation.augment import web_copy

    img = Image.open(io.BytesIO(scenes(1, seed=5)[0]["image"])).convert("RGB")
    a = web_copy(img, np.random.default_rng(3))
    b = web_copy(img, np.random.default_rng(3))
    c = web_copy(img, np.random.default_rng(4))
    assert a.size == img.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(img, dtype=np.int16))
    assert diff.max() > 0                        # not the original bytes
    assert diff.mean() < 40                      # still the same scene, roughly in place


def test_web_copies_add_copies_with_the_same_captions(tmp_path):
    """``web_copies=N`` trains on every pair plus N re-served copies of it (same caption),
    drawn from the seed: the checkpoint records the pairs it saw, and a rerun is identical."""
    import json

    import torch
    from safetensors.torch import load_file

    from curation.train.seed import with_web_copies

    rows = scenes(16, seed=4)
    pairs = [(r["image"], r["caption"]) for r in rows]
    out = with_web_copies(pairs, 2, seed=1)
    assert [r["caption"] for r in out] == [c for _, c in pairs] * 3
    a = train_seed_clip(pairs, out_dir=str(tmp_path / "a"), steps=2, batch_size=8, seed=1, web_copies=1)
    b = train_seed_clip(pairs, out_dir=str(tmp_path / "b"), steps=2, batch_size=8, seed=1, web_copies=1)
    assert json.load(open(f"{a}/config.json"))["pairs"] == 32
    wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
