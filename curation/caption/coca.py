"""Incremental (key/value-cached) forward of an open_clip CoCa model.

open_clip's ``CoCa.generate`` re-runs the text tower and the multimodal decoder over the
whole prefix for every new token (quadratic work per caption). :class:`CachedCoca` runs
the same weights one position at a time:

* the image is encoded once; each decoder layer's cross-attention keys/values over the
  image tokens are projected once and reused for every step;
* the text tower (causal self-attention; its appended CLS token is last, so no text
  position ever attends to it and it can be dropped) and the decoder's causal
  self-attention keep per-layer key/value caches, so a step costs one position.

The text tower's padding mask is reproduced exactly, including open_clip's legacy
``correct_cls_mask=False`` layout in which key ``j`` is masked when token ``j-1`` is the
pad id. Guarantee: :meth:`CachedCoca.step` returns the logits that
``model(None, prefix, image_latent=..., image_embs=..., output_labels=False)["logits"][:, -1]``
returns for the same prefix (up to float rounding), which ``tests/caption`` checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from curation.errors import ConfigError


def check_coca(model) -> None:
    """Raise ConfigError unless ``model`` is an open_clip CoCa with the layers we can cache."""
    from open_clip.coca_model import CoCa
    from open_clip.transformer import ResidualAttentionBlock, TextTransformer

    if not isinstance(model, CoCa):
        raise ConfigError(f"caption model must be an open_clip CoCa model (got {type(model).__name__})")
    if not isinstance(model.text, TextTransformer):
        raise ConfigError("CoCa models with a Hugging Face text tower are not supported by the cached decoder")
    dec = model.text_decoder
    blocks = list(model.text.transformer.resblocks) + list(dec.resblocks) + list(dec.cross_attn)
    for b in blocks:
        if not isinstance(b, ResidualAttentionBlock) or not b.attn._qkv_same_embed_dim or b.attn.bias_k is not None:
            raise ConfigError(f"unsupported CoCa attention block {type(b).__name__} for the cached decoder")


@dataclass
class DecodeState:
    """Caches for a batch of sequences being decoded (rows may be dropped or reordered).

    Attributes:
        pos: number of positions already in the caches (the next token's position).
        text_kv / dec_kv: per-layer ``(k, v)`` tensors ``[B, heads, max_len, head_dim]``.
        cross_kv: per decoder layer ``(k, v)`` over the image tokens ``[B, heads, N, head_dim]``.
        key_mask: ``[B, max_len]`` additive mask for the text tower's padding rule.
        prev: ``[B]`` the previous token (the legacy pad mask looks one token back).
    """

    pos: int
    max_len: int
    text_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    dec_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    key_mask: torch.Tensor | None = None
    prev: torch.Tensor | None = None

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(key_mask, prev)``; both are set by :meth:`CachedDecoder.start`."""
        if self.key_mask is None or self.prev is None:
            raise RuntimeError("DecodeState has no key_mask/prev: create it with CachedDecoder.start")
        return self.key_mask, self.prev

    @property
    def batch(self) -> int:
        return int(self.masks()[1].shape[0])

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or reorder/duplicate, for beams) rows ``rows`` of every cache in place."""
        def pick(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]

        key_mask, prev = self.masks()
        self.text_kv, self.dec_kv, self.cross_kv = pick(self.text_kv), pick(self.dec_kv), pick(self.cross_kv)
        self.key_mask = key_mask.index_select(0, rows)
        self.prev = prev.index_select(0, rows)


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, h, d // h).transpose(1, 2)


def _empty_kv(b: int, h: int, n: int, hd: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.zeros(b, h, n, hd, dtype=like.dtype, device=like.device),
            torch.zeros(b, h, n, hd, dtype=like.dtype, device=like.device))


class CachedCoca:
    """Step-by-step CoCa text decoding with key/value caches (see module docstring).

    Args:
        model: an open_clip ``CoCa`` in eval mode (any precision; run under autocast for bf16).
    """

    def __init__(self, model):
        check_coca(model)
        self.model = model
        self.text = model.text
        self.dec = model.text_decoder
        self.pad_id = int(model.text.pad_id)
        self.legacy_mask = not bool(getattr(model.text, "correct_cls_mask", False))
        # the text tower has one extra position for CLS; generation may use context_length tokens
        self.max_positions = min(int(model.text.num_pos) - (1 if model.text.cls_emb is not None else 0),
                                 int(model.text_decoder.context_length))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_latent, image_tokens)`` from the vision tower (done once per image)."""
        return self.model._encode_image(images)

    @torch.no_grad()
    def start(self, image_tokens: torch.Tensor, max_len: int, repeat: int = 1) -> DecodeState:
        """Prepare caches for ``max_len`` positions; cross-attention K/V are projected here once."""
        if max_len > self.max_positions:
            raise ConfigError(f"caption length {max_len} exceeds the model's context of {self.max_positions} tokens")
        st = DecodeState(pos=0, max_len=max_len)
        for blk in self.dec.cross_attn:
            a = blk.attn
            kv_in = blk.ln_1_kv(image_tokens)
            d = a.embed_dim
            w, bias = a.in_proj_weight, a.in_proj_bias
            k = F.linear(kv_in, w[d:2 * d], None if bias is None else bias[d:2 * d])
            v = F.linear(kv_in, w[2 * d:], None if bias is None else bias[2 * d:])
            k, v = _heads(k, a.num_heads), _heads(v, a.num_heads)
            if repeat > 1:  # beams share their image: project once, then copy
                k, v = k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)
            st.cross_kv.append((k.contiguous(), v.contiguous()))
        b = image_tokens.shape[0] * repeat
        st.prev = torch.full((b,), self.pad_id, dtype=torch.long, device=image_tokens.device)
        st.key_mask = torch.zeros(b, max_len, dtype=torch.float32, device=image_tokens.device)
        return st

    def _self_attn(self, blk, x, kv, st: DecodeState, mask):
        """One residual attention block over one new position, appending to its cache."""
        a = blk.attn
        q, k, v = F.linear(blk.ln_1(x), a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        q, k, v = _heads(q, a.num_heads), _heads(k, a.num_heads), _heads(v, a.num_heads)
        if not kv[0].numel() or kv[0].dtype != k.dtype:
            kv = _empty_kv(x.shape[0], a.num_heads, st.max_len, k.shape[-1], k)
        kv[0][:, :, st.pos] = k[:, :, 0]
        kv[1][:, :, st.pos] = v[:, :, 0]
        n = st.pos + 1
        o = F.scaled_dot_product_attention(q, kv[0][:, :, :n], kv[1][:, :, :n],
                                           attn_mask=None if mask is None else mask.to(q.dtype))
        x = x + blk.ls_1(a.out_proj(o.transpose(1, 2).reshape(x.shape)))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x))), kv

    def _cross_attn(self, blk, x, kv):
        a = blk.attn
        d = a.embed_dim
        w, bias = a.in_proj_weight, a.in_proj_bias
        q = _heads(F.linear(blk.ln_1(x), w[:d], None if bias is None else bias[:d]), a.num_heads)
        o = F.scaled_dot_product_attention(q, kv[0], kv[1])
        x = x + blk.ls_1(a.out_proj(o.transpose(1, 2).reshape(x.shape)))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

    @torch.no_grad()
    def step(self, st: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row at position ``st.pos``; return next-token logits ``[B, vocab]`` (fp32)."""
        if st.pos >= st.max_len:
            raise ValueError(f"decode state is full ({st.max_len} positions)")
        t = self.text
        cast = t.transformer.get_cast_dtype()
        x = t.token_embedding(tokens[:, None]).to(cast) + t.positional_embedding[st.pos].to(cast)
        # padding rule of TextTransformer._build_additive_mask: key j is valid when token j
        # (correct mask) or token j-1 (legacy mask, position 0 always valid) is not the pad id
        if self.legacy_mask:
            valid = torch.ones_like(tokens, dtype=torch.bool) if st.pos == 0 else st.prev != self.pad_id
        else:
            valid = tokens != self.pad_id
        key_mask, _ = st.masks()
        key_mask[:, st.pos] = torch.where(valid, 0.0, float("-inf"))
        mask = key_mask[:, None, None, :st.pos + 1]
        if not st.text_kv:
            st.text_kv = [(torch.empty(0), torch.empty(0))] * len(t.transformer.resblocks)
            st.dec_kv = [(torch.empty(0), torch.empty(0))] * len(self.dec.resblocks)
        for i, blk in enumerate(t.transformer.resblocks):
            x, st.text_kv[i] = self._self_attn(blk, x, st.text_kv[i], st, mask)
        for i, (blk, xblk) in enumerate(zip(self.dec.resblocks, self.dec.cross_attn)):
            x, st.dec_kv[i] = self._self_attn(blk, x, st.dec_kv[i], st, None)
            x = self._cross_attn(xblk, x, st.cross_kv[i])
        out = self.dec.ln_final(x)
        if self.dec.text_projection is not None:
            out = out @ self.dec.text_projection
        st.prev = tokens
        st.pos += 1
        return out[:, 0].float()


@torch.no_grad()
def prefix_logits(model, image_latent: torch.Tensor, image_tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """open_clip's own way: run the model forward over the whole prefix, return the last logits."""
    out = model(None, prefix, image_latent=image_latent, image_embs=image_tokens, output_labels=False)
    return out["logits"][:, -1].float()


@torch.no_grad()
def reference_greedy(model, images: torch.Tensor, *, sot: int, eot: int, max_new_tokens: int,
                     min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy decoding the way ``CoCa.generate`` loops: no cache, the prefix is re-run every step.

    Finished rows are fed the pad id (as open_clip does) so the batch keeps its shape.
    Returns each row's generated tokens, up to and excluding end-of-text.
    """
    pad = int(model.pad_id)
    latent, toks = model._encode_image(images)
    out = torch.full((images.shape[0], 1), sot, dtype=torch.long, device=images.device)
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    for t in range(max_new_tokens):
        logits = prefix_logits(model, latent, toks, out)
        if t < min_new_tokens:
            logits[:, eot] = float("-inf")
        nxt = torch.where(done, torch.full_like(done, pad, dtype=torch.long), logits.argmax(-1))
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == eot
        if bool(done.all()):
            break
    return [_until_eot(row[1:].tolist(), eot) for row in out]


def _until_eot(tokens: list[int], eot: int) -> list[int]:
    return tokens[:tokens.index(eot)] if eot in tokens else tokens


@torch.no_grad()
def randomize_(model, seed: int = 0, std: float = 0.05) -> None:
    """Fill every parameter with seeded noise (tests and benchmarks on random weights).

    open_clip leaves some CoCa parameters (the decoder's vocabulary projection, biases)
    at zero or uninitialised memory, which would make every logit equal; this makes all
    of them non-trivial and reproducible.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g) * std
        if name.endswith("weight") and p.ndim == 1:  # norm gains around 1
            noise += 1.0
        p.copy_(noise.to(p.dtype))
