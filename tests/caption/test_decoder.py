"""The cached CoCa decoder reproduces open_clip's forward and the re-running greedy loop."""
from __future__ import annotations

import pytest
import torch

from curation.caption.coca import CachedCoca, prefix_logits, reference_greedy
from curation.caption.search import DecodeOptions, filter_logits, generate
from tests.caption.conftest import EOT, SOT, tiny_coca


def test_cached_step_logits_equal_open_clip_forward_over_prefix():
    model = tiny_coca(1)
    coca = CachedCoca(model)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    latent, toks = coca.encode_images(images)
    st = coca.start(toks, 12)
    prefix = torch.full((3, 1), SOT)
    for i in range(10):
        cached = coca.step(st, prefix[:, -1])
        full = prefix_logits(model, latent, toks, prefix)
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
        nxt = cached.argmax(-1)
        if i == 3:
            nxt[1] = model.pad_id  # a pad-id token mid-caption exercises the text tower's pad mask
        prefix = torch.cat([prefix, nxt[:, None]], dim=1)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_cached_greedy_equals_uncached_greedy_with_ragged_stops(ragged_coca, batch):
    model, images, lengths = ragged_coca
    coca = CachedCoca(model)
    got = generate(coca, images[:batch], sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=20))
    want = reference_greedy(model, images[:batch], sot=SOT, eot=EOT, max_new_tokens=20)
    assert got == want
    assert [len(r) for r in got] == lengths[:batch]


def test_ragged_fixture_really_stops_at_different_steps(ragged_coca):
    _, _, lengths = ragged_coca
    assert len(set(lengths)) >= 3 and min(lengths) < 20 and max(lengths) == 20


def test_min_new_tokens_delays_end_of_text(ragged_coca):
    model, images, _ = ragged_coca
    coca = CachedCoca(model)
    got = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=20, min_new_tokens=6))
    assert all(len(r) >= 6 for r in got)
    assert got == reference_greedy(model, images, sot=SOT, eot=EOT, max_new_tokens=20, min_new_tokens=6)


def test_beam_search_with_one_beam_equals_greedy(ragged_coca):
    model, images, _ = ragged_coca
    coca = CachedCoca(model)
    greedy = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=20))
    beam = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(method="beam", num_beams=1, max_new_tokens=20))
    assert beam == greedy


def test_beam_search_finds_a_caption_at_least_as_likely_as_greedy(ragged_coca):
    model, images, _ = ragged_coca
    coca = CachedCoca(model)
    opts = DecodeOptions(method="beam", num_beams=4, max_new_tokens=8, length_penalty=0.0)
    beam = generate(coca, images, sot=SOT, eot=EOT, opts=opts)
    greedy = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=8))

    def logprob(i, toks):  # sum log p of toks (+ end-of-text when it stopped early) under the model
        latent, emb = coca.encode_images(images[i:i + 1])
        seq, total = [SOT], 0.0
        for t in toks + ([EOT] if len(toks) < 8 else []):
            lp = prefix_logits(model, latent, emb, torch.tensor([seq])).log_softmax(-1)[0, t]
            total, seq = total + float(lp), seq + [t]
        return total

    for i in range(len(images)):
        assert logprob(i, beam[i]) >= logprob(i, greedy[i]) - 1e-4


def test_sampling_is_reproducible_with_a_seed(ragged_coca):
    model, images, _ = ragged_coca
    coca = CachedCoca(model)
    def opts(seed: int) -> DecodeOptions:
        return DecodeOptions(method="sample", top_k=50, top_p=0.9, seed=seed, max_new_tokens=12)

    a = generate(coca, images, sot=SOT, eot=EOT, opts=opts(3))
    assert a == generate(coca, images, sot=SOT, eot=EOT, opts=opts(3))
    assert a != generate(coca, images, sot=SOT, eot=EOT, opts=opts(4))


def test_top_k_and_top_p_filters_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.01)).tolist() == [[True, False, False, False]]


def test_top_k_one_sampling_is_greedy(ragged_coca):
    model, images, _ = ragged_coca
    coca = CachedCoca(model)
    sampled = generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(method="sample", top_k=1, max_new_tokens=20))
    assert sampled == generate(coca, images, sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=20))


def test_caption_longer_than_the_context_is_refused():
    from curation.errors import ConfigError

    coca = CachedCoca(tiny_coca(0))
    with pytest.raises(ConfigError, match="context"):
        generate(coca, torch.zeros(1, 3, 32, 32), sot=SOT, eot=EOT, opts=DecodeOptions(max_new_tokens=40))


def test_non_coca_model_is_refused():
    from curation.errors import ConfigError
    from curation.models import load_clip

    with pytest.raises(ConfigError, match="CoCa"):
        CachedCoca(load_clip("curation-tiny").model)
