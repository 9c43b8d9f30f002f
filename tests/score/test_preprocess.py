"""Decoding pieces: the split transform equals open_clip's, draft mode, and the GPU path on CPU."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from curation.models import load_clip
from curation.score.embed import ClipEmbedder
from curation.score.preprocess import PixelPipeline, decode_batch_torch, resize_normalize
from tests.helpers import drawn_image


def _pipe():
    clip = load_clip("curation-tiny")
    return clip, PixelPipeline.from_preprocess(clip.preprocess)


def _pixels(pipe: PixelPipeline, data: bytes, draft: bool) -> np.ndarray:
    arr, err = pipe.decode(data, draft=draft)
    assert arr is not None, err
    return arr


def test_split_transform_is_bitwise_open_clip_preprocess():
    clip, pipe = _pipe()
    for data in (drawn_image(1, (300, 200)), drawn_image(2, (40, 40), "CMYK"), drawn_image(3, (33, 70), "P", "PNG")):
        arr, err = pipe.decode(data, draft=False)
        assert err is None and arr is not None
        ref = clip.preprocess(Image.open(io.BytesIO(data)))
        assert torch.equal(pipe.to_tensor(arr[None])[0], ref)


def test_draft_mode_close_and_exact_for_png():
    _, pipe = _pipe()
    jpg = drawn_image(4, (640, 480))
    full, fast = _pixels(pipe, jpg, False), _pixels(pipe, jpg, True)
    assert np.abs(full.astype(int) - fast.astype(int)).mean() < 6  # same picture, cheaper decode
    png = drawn_image(5, (640, 480), fmt="PNG")
    assert np.array_equal(_pixels(pipe, png, True), _pixels(pipe, png, False))


def test_torch_decode_path_on_cpu_matches_pil_path():
    clip, pipe = _pipe()
    datas = [drawn_image(i, (96, 64)) for i in range(4)] + [b"\xff\xd8\xffnope", drawn_image(9, fmt="PNG")]
    dec = decode_batch_torch(datas, "cpu")
    assert dec[4].startswith("decode_error") and dec[5] == "not_jpeg"
    x = resize_normalize(dec[:4], pipe)
    ref = torch.stack([pipe.to_tensor(_pixels(pipe, d, False)[None])[0] for d in datas[:4]])
    assert x.shape == ref.shape == (4, 3, 32, 32)
    assert (x - ref).abs().mean() < 0.05  # libjpeg-turbo vs Pillow + torch vs PIL bicubic


def test_actor_torch_decode_batch_scores_and_reasons_on_cpu():
    torch.manual_seed(0)
    _, pipe = _pipe()
    datas = [drawn_image(i, (96, 64)) for i in range(3)] + [b"\xff\xd8\xffnope", drawn_image(7, fmt="PNG")]
    actor = ClipEmbedder("curation-tiny", None, "cpu", "fp32", pipe)
    tok = actor.clip.tokenizer(["a"] * 5).numpy()
    out = actor({"uid": np.array(list("abcde"), dtype=object), "shard": np.zeros(5, np.int32), "tokens": tok,
                 "image": np.array(datas, dtype=object), "error": np.array([""] * 5, dtype=object)})
    assert out["score_error"][3].startswith("decode_error") and np.isnan(out["clip_score"][3])
    assert out["score_error"][4] == ""  # PNG falls back to the PIL path, still scored
    ok = [0, 1, 2, 4]
    assert np.allclose((out["image_emb"][ok] * out["text_emb"][ok]).sum(1), out["clip_score"][ok], atol=1e-5)


def test_fused_pil_path_is_bitwise_open_clip_for_many_shapes_and_modes():
    import pickle

    clip, pipe = _pipe()
    assert pipe.pil_transforms == [] and pipe.resize == 32  # plain numbers: read tasks need no torchvision
    assert b"torchvision" not in pickle.dumps(pipe)
    cases = [((1, 1), "RGB", "JPEG"), ((32, 32), "RGB", "PNG"), ((33, 32), "RGB", "JPEG"), ((31, 90), "L", "PNG"),
             ((500, 37), "RGBA", "PNG"), ((64, 257), "P", "PNG"), ((123, 77), "CMYK", "JPEG"),
             ((2, 300), "RGB", "JPEG")]
    for i, (size, mode, fmt) in enumerate(cases):
        data = drawn_image(10 + i, size, mode, fmt)
        arr, err = pipe.decode(data, draft=False)
        assert err is None and arr is not None, (size, mode)
        ref = clip.preprocess(Image.open(io.BytesIO(data)))
        assert torch.equal(pipe.to_tensor(arr[None])[0], ref), (size, mode, fmt)


def test_decode_many_and_prefetch():
    import pytest

    from curation.score.embed import prefetch

    _, pipe = _pipe()
    px, errs = pipe.decode_many([drawn_image(1, (64, 48)), b"junk", drawn_image(2, (40, 90), fmt="PNG")])
    assert px.shape == (3, 32, 32, 3) and errs[0] == errs[2] == "" and errs[1].startswith("decode_error")
    assert not px[1].any()
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def boom():
        yield 1
        raise ValueError("bad shard")

    with pytest.raises(ValueError, match="bad shard"):
        list(prefetch(boom()))
    it = prefetch(iter(range(1000)))
    assert next(it) == 0
    it.close()  # consumer leaves early: the producer thread stops instead of blocking forever
