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
