"""Head loaders on the exact public layouts (random weights), our own heads, and clean refusals."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from curation.classify.heads import HeadError, load_head, save_head
from curation.classify.stage import classify
from tests.safety.embeds import dataset_with_embeddings


class AestheticMLP(nn.Module):
    """christophschuhmann/improved-aesthetic-predictor's MLP (as NeMo Curator also defines it)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                    nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                    nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


class Normalization(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        return (x - self.get_buffer("mean")) / self.get_buffer("variance").sqrt()


class NSFWModel(nn.Module):
    """LAION's CLIP-based NSFW detector in NeMo Curator's torch layout."""

    def __init__(self):
        super().__init__()
        self.norm = Normalization([768])
        self.linear_1 = nn.Linear(768, 64)
        self.linear_2 = nn.Linear(64, 512)
        self.linear_3 = nn.Linear(512, 256)
        self.linear_4 = nn.Linear(256, 1)
        self.act = nn.ReLU()
        self.act_out = nn.Sigmoid()

    def forward(self, x):
        x = self.norm(x)
        x = self.act(self.linear_1(x))
        x = self.act(self.linear_2(x))
        x = self.act(self.linear_3(x))
        return self.act_out(self.linear_4(x))


def _l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _save(model: nn.Module, path: str) -> str:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
        if isinstance(model, NSFWModel):
            model.norm.get_buffer("mean").normal_(0, 0.01)
            model.norm.get_buffer("variance").uniform_(0.5, 2.0)
    torch.save(model.state_dict(), path)
    return path


def test_public_layouts_load_and_match_torch(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 768)).astype(np.float32)
    for cls, kind in ((AestheticMLP, "laion_aesthetic"), (NSFWModel, "laion_nsfw")):
        model = cls().eval()
        path = _save(model, str(tmp_path / f"{kind}.pth"))
        assert set(torch.load(path, weights_only=True)) >= {"layers.0.weight"} if kind == "laion_aesthetic" \
            else {"norm.mean", "linear_4.weight"}
        head = load_head(path)
        assert head.kind == kind and head.dim == 768
        with torch.no_grad():
            want = model(torch.from_numpy(_l2(x))).numpy()[:, 0]
        np.testing.assert_allclose(head.scores(x), want, rtol=1e-4, atol=1e-5)
        # the same state dict as safetensors loads too
        from safetensors.torch import save_file

        st = str(tmp_path / f"{kind}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
        np.testing.assert_allclose(load_head(st).scores(x), want, rtol=1e-4, atol=1e-5)


def test_classify_writes_scores_and_nulls(tmp_path):
    ds = dataset_with_embeddings(str(tmp_path / "ds"), dim=768, model="ViT-L-14/openai")
    aes = _save(AestheticMLP().eval(), str(tmp_path / "aes.pth"))
    nsfw = _save(NSFWModel().eval(), str(tmp_path / "nsfw.pth"))
    out = classify(ds.url, {"aesthetic": aes, "nsfw": nsfw})
    meta = out.read_meta().to_pylist()
    emb = {r["uid"]: r["image_emb"] for r in out.read_embeddings().to_pylist()}
    head = load_head(nsfw)
    for r in meta:
        if r["status"] == "success":
            assert r["nsfw_score"] == pytest.approx(float(head.scores(np.array([emb[r["uid"]]]))[0]), abs=1e-6)
            assert r["aesthetic_score"] is not None
        else:
            assert r["nsfw_score"] is None and r["aesthetic_score"] is None
    from curation.io.query import query

    n = query(out, "SELECT count(*) AS n FROM samples WHERE nsfw_score <= 0.5").column("n")[0].as_py()
    assert 0 <= n <= 10


def test_wrong_dimension_or_model_fails_before_writing(tmp_path):
    ds = dataset_with_embeddings(str(tmp_path / "ds"), dim=512, model="ViT-B-32/openai")
    aes = _save(AestheticMLP().eval(), str(tmp_path / "aes.pth"))
    before = sorted(os.listdir(tmp_path / "ds" / "meta"))
    with pytest.raises(HeadError, match=r"aes.pth: head takes 768-d embeddings, .* has 512-d \(ViT-B-32/openai\)"):
        classify(ds.url, {"aesthetic": aes})
    # a 512-d head of our own, made for another model
    rng = np.random.default_rng(0)
    own = save_head(str(tmp_path / "own.safetensors"), [("normalize",), ("linear", rng.normal(size=(1, 512)),
                                                                           np.zeros(1)), ("sigmoid",)],
                    dim=512, embedding_model="ViT-B-16/laion2b_s34b_b88k", label="x")
    with pytest.raises(HeadError, match="head was made for embeddings of ViT-B-16/laion2b_s34b_b88k"):
        classify(ds.url, {"own": own})
    assert sorted(os.listdir(tmp_path / "ds" / "meta")) == before
    # unknown layouts and pickled code are refused in one line
    torch.save({"fc.weight": torch.zeros(1, 512)}, tmp_path / "odd.pth")
    with pytest.raises(HeadError, match="unknown head layout"):
        load_head(str(tmp_path / "odd.pth"))
    torch.save(AestheticMLP(), tmp_path / "module.pth")  # a whole pickled module, not a state dict
    with pytest.raises(HeadError, match="not a plain tensor state dict"):
        load_head(str(tmp_path / "module.pth"))
    with pytest.raises(HeadError, match="head file not found"):
        load_head(str(tmp_path / "missing.pth"))
    # matching model and dimension: scored
    ok = save_head(str(tmp_path / "ok.safetensors"), [("normalize",), ("linear", rng.normal(size=(1, 512)),
                                                                         np.zeros(1)), ("sigmoid",)],
                   dim=512, embedding_model="ViT-B-32/openai", label="x")
    assert "own_score" in classify(ds.url, {"own": ok}).columns


def test_filter_rules_on_head_scores(tmp_path):
    from curation.errors import ConfigError
    from curation.filters.stage import FilterStage
    from curation.stage import StageContext

    ds = dataset_with_embeddings(str(tmp_path / "ds"), dim=768, model="ViT-L-14/openai")
    with pytest.raises(ConfigError, match="max_nsfw: .* has no nsfw_score; run `curate classify --head nsfw=HEAD`"):
        FilterStage({"max_nsfw": 0.5, "parallel": False})(ds, StageContext())
    out = classify(ds.url, {"aesthetic": _save(AestheticMLP().eval(), str(tmp_path / "a.pth")),
                            "nsfw": _save(NSFWModel().eval(), str(tmp_path / "n.pth"))})
    rows = out.read_meta().to_pylist()
    ok = [r for r in rows if r["status"] == "success"]
    nsfw_cut = float(np.median([r["nsfw_score"] for r in ok]))
    aes_cut = float(np.median([r["aesthetic_score"] for r in ok]))
    res = FilterStage({"max_nsfw": nsfw_cut, "min_aesthetic": aes_cut, "parallel": False})(out, StageContext())
    for r in res.read_meta().to_pylist():
        if r["status"] != "success":
            assert r["keep"] is False
            continue
        want = [n for n, bad in (("min_aesthetic", r["aesthetic_score"] < np.float32(aes_cut)),
                                 ("max_nsfw", r["nsfw_score"] > np.float32(nsfw_cut))) if bad]
        assert r["reasons"] == want and r["keep"] == (not want)
