"""The seed trainer's fast paths compute what the plain model computes: the text tower over the
first L positions only, and the embedding trained over the used rows only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from curation.train.seed import _compact_vocabulary, _trimmed_text_encoder, create_train_model


def test_trimmed_text_encoder_equals_encode_text():
    net, _, tok = create_train_model("curation-tiny-rn", None, 0)
    tokens = tok(["two red circles on a blue background", "a green square", "one big yellow triangle"])
    enc = _trimmed_text_encoder(net, tokens)
    assert enc is not net.encode_text  # the fast path is taken for open_clip's CLIP
    with torch.no_grad():
        assert torch.allclose(enc(tokens), net.encode_text(tokens), atol=1e-5, rtol=1e-4)
    assert int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]  # it really ran on fewer positions


def test_compact_vocabulary_trains_only_used_rows_and_writes_them_back():
    net, _, tok = create_train_model("curation-tiny-rn", None, 0)
    tokens = tok(["two red circles", "a green square"])
    before = net.token_embedding.weight.detach().clone()
    full_out = net.encode_text(tokens).detach()
    small_tokens, restore = _compact_vocabulary(net, tokens)
    used = torch.unique(tokens)
    assert net.token_embedding.num_embeddings == len(used) and int(small_tokens.max()) == len(used) - 1
    assert torch.allclose(net.encode_text(small_tokens), full_out, atol=1e-5)  # argmax pooling: same position
    opt = torch.optim.SGD(net.token_embedding.parameters(), lr=1.0)
    F.normalize(net.encode_text(small_tokens), dim=-1).sum().backward()
    opt.step()
    restore()
    after = net.token_embedding.weight.detach()
    assert after.shape == before.shape
    unused = torch.ones(len(before), dtype=torch.bool)
    unused[used] = False
    assert torch.equal(after[unused], before[unused]) and not torch.equal(after[used], before[used])
