"""The demo's filter-CLIP cache: keyed by everything that decides the weights, used only when the key matches."""
from __future__ import annotations

import os

import pytest


@pytest.mark.slow
def test_filter_clip_cache_is_keyed_and_reused(tmp_path, monkeypatch):
    from curation import demo
    from curation.synth import generate

    monkeypatch.setenv("CURATION_CACHE", str(tmp_path / "cache"))
    corpus = str(tmp_path / "synth")
    generate(corpus, samples=20, seed=0, seed_samples=40)
    k2, k3 = demo.filter_clip_key(corpus, 2, 0), demo.filter_clip_key(corpus, 3, 0)
    assert k2 != k3 and k2 != demo.filter_clip_key(corpus, 2, 1) and k2 == demo.filter_clip_key(corpus, 2, 0)
    assert demo.filter_clip(corpus, str(tmp_path / "a"), 2, 0, use_cache=True) == "trained"
    assert os.path.exists(tmp_path / "cache" / "demo-seed-clip" / k2 / "model.safetensors")
    assert demo.filter_clip(corpus, str(tmp_path / "b"), 2, 0, use_cache=True) == "cache"
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert demo.filter_clip(corpus, str(tmp_path / "c"), 2, 0, use_cache=False) == "trained"
    # other seed pairs, another key: never the old model
    with open(os.path.join(corpus, "seed.parquet"), "ab") as f:
        f.write(b"\0")
    assert demo.filter_clip_key(corpus, 2, 0) != k2
