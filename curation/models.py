"""open_clip model loading shared by scoring, captioning, search and training.

``load_clip(name, pretrained)`` accepts what open_clip accepts — a model name with a
``pretrained`` tag (``ViT-B-32`` + ``laion2b_s34b_b79k``), an ``hf-hub:org/name`` id, or
a local checkpoint file (``.pt``/``.safetensors``, loaded with ``weights_only=True``) —
plus a project checkpoint folder written by :func:`save_checkpoint` (``config.json`` +
``model.safetensors``). Nothing is unpickled. Tiny configs for tests and the demo are
registered with open_clip on import.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any

from curation.errors import ConfigError

# DESIGN.md section 7: 32x32 px, vision width 128 / 3 layers / patch 8, text width 128 /
# 2 layers / context 16. Measured to train on 2 cores at ~0.6 s per 256-pair step.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "curation-tiny": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 128, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
    },
    # the demo's filter CLIP: a ModifiedResNet tower (1.36M visual parameters) learns shape and
    # count from 3,000 seed pairs far faster than the ViT (held-out exact retrieval over the
    # 1,764-caption bank: 0.60 after 900 augmented steps; the ViT reached 0.17 at 1,000 steps
    # and only 0.27 shape accuracy; bench/RESULTS.md "Demo")
    "curation-tiny-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
    },
    # the demo's filter CLIP since 2026-12-01 (session 6): the ResNet tower at width 20 (2.1M visual
    # parameters) with a one-layer, 64-wide text tower. A step costs less than curation-tiny-rn's
    # (109 vs 129 ms, 2 threads): the 2-layer, 128-wide text tower took half of that step for a
    # vocabulary of ~60 words, and the wider image tower gets the time (bench/RESULTS.md "Demo")
    "curation-filter-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 20, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "curation-tiny-coca": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8, "head_width": 32,
                       "attentional_pool": True, "attn_pooler_heads": 4, "output_tokens": True},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2,
                     "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2,
                           "attn_pooler_heads": 4},
        "custom_text": True,
    },
}


def register_tiny_configs() -> None:
    """Add the project's tiny configs to open_clip's registry (idempotent)."""
    from open_clip import factory

    for name, cfg in TINY_CONFIGS.items():
        factory._MODEL_CONFIGS.setdefault(name, copy.deepcopy(cfg))


def available_models() -> list[str]:
    import open_clip

    register_tiny_configs()
    return sorted(set(open_clip.list_models()))


@dataclass
class LoadedClip:
    """A model with its eval preprocess and tokenizer, and a name for ``clip_model`` columns."""

    model: Any
    preprocess: Any
    tokenizer: Any
    name: str          # e.g. "ViT-B-32/laion2b_s34b_b79k", "curation-tiny/<path>"
    arch: str
    context_length: int


def _resolve(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """Map a project checkpoint folder onto (architecture, weights file)."""
    for cand in (pretrained, model):
        if cand and os.path.isdir(cand) and os.path.exists(os.path.join(cand, "config.json")):
            cfg = json.loads(open(os.path.join(cand, "config.json")).read())
            return cfg["model"], os.path.join(cand, "model.safetensors")
    return model, pretrained


def load_clip(model: str, pretrained: str | None = None, *, device: str = "cpu",
              precision: str = "fp32") -> LoadedClip:
    """Load an open_clip model for inference (eval mode).

    Raises ConfigError listing the valid names when ``model`` is unknown.
    """
    import open_clip

    register_tiny_configs()
    arch, weights = _resolve(model, pretrained)
    if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {arch!r}; valid names: {', '.join(available_models())}")
    if weights and not weights.startswith("hf-hub:") and os.path.sep in weights and not os.path.exists(weights):
        raise ConfigError(f"pretrained checkpoint {weights!r} does not exist")
    m, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=weights or None, device=device, precision=precision, weights_only=True)
    m.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    ctx = int(getattr(m, "context_length", None) or getattr(tokenizer, "context_length", 77))
    label = f"{arch}/{pretrained}" if pretrained else f"{arch}/random-init"
    return LoadedClip(m, preprocess, tokenizer, label, arch, ctx)


def save_checkpoint(model: Any, arch: str, path: str, extra: dict | None = None) -> str:
    """Save a project checkpoint folder loadable by :func:`load_clip` (``pretrained=path``)."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"model": arch, **(extra or {})}, f, indent=1)
    return path


register_tiny_configs()
