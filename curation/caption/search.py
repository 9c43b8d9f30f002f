"""Decoding strategies over :class:`~curation.caption.coca.CachedCoca`: greedy, top-k/top-p
sampling with a seeded ``torch.Generator``, and beam search.

All strategies are batched and stop per sequence at end-of-text: finished rows leave the
batch (their caches are dropped), so a batch costs what its live rows cost. Results are
each row's generated token ids, without the start token and up to (excluding) end-of-text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from curation.caption.coca import CachedCoca, DecodeState

Method = Literal["greedy", "sample", "beam"]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode.

    Attributes:
        method: ``greedy``, ``sample`` (temperature / top-k / top-p) or ``beam``.
        max_new_tokens: tokens generated at most per caption (end-of-text included).
        min_new_tokens: end-of-text is forbidden before this many tokens (open_clip's
            ``min_seq_len`` minus the start token).
        temperature, top_k, top_p: sampling filters (``top_k=0`` / ``top_p=1`` disable them).
        num_beams, length_penalty: beam search; a hypothesis scores ``sum logp / len**penalty``
            and an image is done once it has ``num_beams`` finished hypotheses (so one beam is
            exactly greedy decoding).
        seed: sampling seed; equal seeds and inputs give equal captions.
    """

    method: Method = "greedy"
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 3
    length_penalty: float = 1.0
    seed: int = 0


def generate(coca: CachedCoca, images: torch.Tensor, *, sot: int, eot: int,
             opts: DecodeOptions = DecodeOptions()) -> list[list[int]]:
    """Decode a batch of preprocessed images into token lists (see module docstring)."""
    _, tokens = coca.encode_images(images)
    if opts.method == "beam":
        return _beam(coca, tokens, sot, eot, opts)
    gen = None
    if opts.method == "sample":
        gen = torch.Generator(device=images.device).manual_seed(int(opts.seed))
    return _stepwise(coca, tokens, sot, eot, opts, gen)


def _ban_eot(logits: torch.Tensor, step: int, eot: int, opts: DecodeOptions) -> torch.Tensor:
    if step < opts.min_new_tokens:
        logits[:, eot] = float("-inf")
    return logits


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf (at least one kept)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already >= p
        drop[:, 0] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _stepwise(coca: CachedCoca, image_tokens: torch.Tensor, sot: int, eot: int,
              opts: DecodeOptions, gen: torch.Generator | None) -> list[list[int]]:
    """Greedy or sampling; rows that emit end-of-text are dropped from the batch."""
    b, dev = image_tokens.shape[0], image_tokens.device
    st = coca.start(image_tokens, 1 + opts.max_new_tokens)
    out = torch.full((b, opts.max_new_tokens), eot, dtype=torch.long, device=dev)
    rows = torch.arange(b, device=dev)           # which original row each live row is
    tok = torch.full((b,), sot, dtype=torch.long, device=dev)
    for t in range(opts.max_new_tokens):
        logits = _ban_eot(coca.step(st, tok), t, eot, opts)
        if gen is None:
            tok = logits.argmax(-1)
        else:
            logits = filter_logits(logits / max(opts.temperature, 1e-6), opts.top_k, opts.top_p)
            tok = torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]
        out[rows, t] = tok
        live = tok != eot
        if not bool(live.all()):
            keep = live.nonzero()[:, 0]
            if keep.numel() == 0:
                break
            st.select(keep)
            rows, tok = rows[keep], tok[keep]
    return [_cut(r, eot) for r in out.tolist()]


def _cut(tokens: list[int], eot: int) -> list[int]:
    return tokens[:tokens.index(eot)] if eot in tokens else tokens


def _beam(coca: CachedCoca, image_tokens: torch.Tensor, sot: int, eot: int,
          opts: DecodeOptions) -> list[list[int]]:
    """Beam search with early stopping; finished images leave the batch."""
    nb, b, dev = max(1, opts.num_beams), image_tokens.shape[0], image_tokens.device
    st = coca.start(image_tokens, 1 + opts.max_new_tokens, repeat=nb)
    scores = torch.full((b, nb), float("-inf"), device=dev)
    scores[:, 0] = 0.0                              # all beams start equal: expand only one
    seqs = torch.empty((b * nb, 0), dtype=torch.long, device=dev)
    tok = torch.full((b * nb,), sot, dtype=torch.long, device=dev)
    items = list(range(b))                          # original image of each live item
    hyps: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for t in range(opts.max_new_tokens):
        logp = _ban_eot(coca.step(st, tok).log_softmax(-1), t, eot, opts)
        vocab = logp.shape[-1]
        cand = (scores.reshape(-1, 1) + logp).reshape(len(items), nb * vocab)
        top_s, top_i = cand.topk(2 * nb, dim=1)
        src, word = (top_i // vocab).tolist(), (top_i % vocab).tolist()
        top_s_l, seq_l = top_s.tolist(), seqs.tolist()
        new_rows, new_tok, new_scores, keep_items = [], [], [], []
        for j, item in enumerate(items):
            beams = _expand_item(j, nb, src[j], word[j], top_s_l[j], seq_l, eot, opts, hyps[item], t)
            if len(hyps[item]) >= nb or not beams:
                continue                            # early stopping: this image is done
            keep_items.append(item)
            for row, w, s in beams:
                new_rows.append(row)
                new_tok.append(w)
                new_scores.append(s)
        if not keep_items:
            break
        rows = torch.tensor(new_rows, device=dev)
        st.select(rows)
        tok = torch.tensor(new_tok, device=dev)
        seqs = torch.cat([seqs.index_select(0, rows), tok[:, None]], dim=1)
        scores = torch.tensor(new_scores, device=dev).reshape(len(keep_items), nb)
        items = keep_items
    for j, item in enumerate(items):                # out of length: live beams become hypotheses
        for k in range(nb):
            s = float(scores[j, k])
            if s > float("-inf") and len(hyps[item]) < nb:
                _add_hyp(hyps[item], s, seqs[j * nb + k].tolist(), opts)
    return [max(h, key=lambda x: x[0])[1] if h else [] for h in hyps]


def _expand_item(j, nb, src, word, score, seq_l, eot, opts, hyps, t):
    """Walk one image's ranked candidates: end-of-text ones (within the top ``nb``) finish a
    hypothesis, the others become the next beams until ``nb`` are chosen."""
    beams = []
    for rank, (s_idx, w, s) in enumerate(zip(src, word, score)):
        if s == float("-inf"):
            break
        row = j * nb + s_idx
        if w == eot:
            if rank < nb:
                _add_hyp(hyps, s, seq_l[row], opts)
            continue
        beams.append((row, w, s))
        if len(beams) == nb:
            break
    return beams


def _add_hyp(hyps: list, score: float, tokens: list[int], opts: DecodeOptions) -> None:
    hyps.append((score / max(1, len(tokens) + 1) ** opts.length_penalty, list(tokens)))


def decode_text(tokenizer, tokens: list[int]) -> str:
    """Token ids (no start/end markers) -> caption text, special markers stripped."""
    text = tokenizer.decode(tokens) if hasattr(tokenizer, "decode") else __import__("open_clip").decode(tokens)
    for marker in ("<start_of_text>", "<end_of_text>"):
        text = text.replace(marker, "")
    return " ".join(text.split())


__all__ = ["DecodeOptions", "DecodeState", "generate", "filter_logits", "decode_text"]
