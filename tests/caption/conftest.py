"""Shared fixtures: a random-weight tiny CoCa whose end-of-text fires at ragged positions."""
from __future__ import annotations

import pytest
import torch

SOT, EOT = 49406, 49407


def tiny_coca(seed: int = 0):
    from curation.caption.coca import randomize_
    from curation.models import load_clip

    model = load_clip("curation-tiny-coca").model
    randomize_(model, seed=seed, std=0.1)
    return model


def make_ragged(model, images: torch.Tensor, max_new: int) -> list[int]:
    """Tie the end-of-text logit to a frequent token plus a little noise, so greedy decoding
    stops at different steps for different rows; returns the greedy lengths it found."""
    from curation.caption.coca import CachedCoca
    from curation.caption.search import DecodeOptions, generate

    proj = model.text_decoder.text_projection
    coca = CachedCoca(model)
    first = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=max_new))
    common = torch.tensor([t for row in first for t in row]).mode().values.item()
    g = torch.Generator().manual_seed(0)
    for scale in (0.003, 0.006, 0.01, 0.02):
        with torch.no_grad():
            proj[:, EOT] = proj[:, common] + scale * torch.randn(proj.shape[0], generator=g)
        lengths = [len(r) for r in generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=max_new))]
        if len(set(lengths)) >= 3 and max(lengths) == max_new:
            return lengths
    raise AssertionError(f"could not make ragged stops (last lengths {lengths})")


@pytest.fixture(scope="module")
def ragged_coca():
    torch.manual_seed(0)
    model = tiny_coca(0)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    lengths = make_ragged(model, images, 20)
    return model, images, lengths


SCENES = [("red", "circle", "blue"), ("green", "square", "white"), ("yellow", "triangle", "black"),
          ("blue", "diamond", "yellow"), ("white", "circle", "green"), ("black", "square", "pink")]


def scene_caption(color: str, shape: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background"


def scene_png(color: str, shape: str, background: str, seed: int = 0, size: int = 32) -> bytes:
    import io

    from curation.synth import render_scene

    img = render_scene(color, shape, background, 1, width=size, height=size, seed=seed)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_dataset(root: str, samples: list[dict], per_shard: int = 4):
    """A committed dataset: ``samples`` are dicts with ``scene`` (or None for a failed
    download) and ``caption``; returns the Dataset."""
    from curation.io import Dataset
    from curation.io.writer import DatasetWriter

    w = DatasetWriter(root, stage="download", config={"test": True})
    shard_ids = []
    for sid, start in enumerate(range(0, len(samples), per_shard)):
        with w.shard(sid) as sw:
            for i, s in enumerate(samples[start:start + per_shard], start):
                row = {"uid": f"u{i:04d}", "key": f"k{i:04d}", "url": f"http://127.0.0.1/{i}.png",
                       "caption": s["caption"], "status": "success" if s["scene"] else "http_404",
                       "error": None, "width": 32, "height": 32, "original_width": 32,
                       "original_height": 32, "sha256": None}
                sw.add(row, scene_png(*s["scene"], seed=i) if s["scene"] else None, "png")
        shard_ids.append(sid)
    w.commit(shard_ids)
    return Dataset(root)
