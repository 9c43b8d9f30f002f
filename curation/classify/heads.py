"""Classifier heads over stored CLIP embeddings: loading the public layouts and our own.

A :class:`Head` is a small stack of numpy ops (``normalize``, ``standardize``, ``linear``,
``relu``, ``sigmoid``) with the facts needed to refuse a wrong input: the embedding model it
was trained on and its input dimension. Three file layouts load:

* **LAION improved-aesthetic-predictor** (``sac+logos+ava1-l14-linearMSE.pth``, also what NeMo
  Curator's aesthetic classifier loads): a state dict of ``layers.{0,2,4,6,7}.{weight,bias}``,
  Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16)
  Linear(16,1) with no activations, over L2-normalised OpenAI ViT-L/14 image embeddings; the
  output is the raw aesthetic rating (about 1-10).
* **LAION CLIP-based NSFW detector in NeMo Curator's torch layout**: ``norm.mean``,
  ``norm.variance`` (a Keras Normalization layer), ``linear_1..4.{weight,bias}``:
  768 -> 64 -> 512 -> 256 -> 1 with ReLU between and a sigmoid out, over L2-normalised
  OpenAI ViT-L/14 embeddings; the output is P(NSFW).
* **curation heads** (``train-head`` writes them): safetensors whose metadata names
  ``format: curation-head/1``, ``embedding_model``, ``dim``, ``normalize``, ``label`` and
  the layer list, so a head made for one embedding model is refused on another.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` (no unpickling of
code); safetensors need no torch at all. Every mismatch is a one-line :class:`HeadError`
raised before the classify stage writes anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curation.errors import ConfigError

HEAD_FORMAT = "curation-head/1"
# the embedding model the public LAION heads were trained on (open_clip names of OpenAI ViT-L/14)
LAION_MODELS = ("ViT-L-14/openai", "ViT-L-14-quickgelu/openai")
_AESTHETIC_KEYS = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
_NSFW_KEYS = ["norm.mean", "norm.variance"] + [f"linear_{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]


class HeadError(ConfigError):
    """A head file is unreadable, of an unknown layout, or does not fit the dataset's embeddings."""


@dataclass
class Head:
    """A loaded head: ``scores(x)`` maps ``N x dim`` embeddings to ``N`` float32 scores.

    Attributes:
        kind: ``laion_aesthetic``, ``laion_nsfw`` or ``curation``.
        dim: input dimension.
        models: embedding model labels it accepts (the manifest's ``embeddings.model``).
        ops: the forward pass, in order: ``("normalize",)``, ``("standardize", mean, std)``,
            ``("linear", W, b)`` with ``W`` out x in, ``("relu",)``, ``("sigmoid",)``.
        meta: the file's metadata (label, threshold, metrics for curation heads).
    """

    kind: str
    dim: int
    models: tuple[str, ...]
    ops: list[tuple]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def scores(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise HeadError(f"{self.source}: head takes {self.dim}-d embeddings, got shape {tuple(h.shape)}")
        for op in self.ops:
            if op[0] == "normalize":
                n = np.linalg.norm(h, axis=1, keepdims=True)
                h = h / np.where(n > 0, n, 1)
            elif op[0] == "standardize":
                h = (h - op[1]) / op[2]
            elif op[0] == "linear":
                h = h @ op[1].T + op[2]
            elif op[0] == "relu":
                h = np.maximum(h, 0)
            elif op[0] == "sigmoid":
                h = 0.5 * (1.0 + np.tanh(0.5 * h))  # the logistic function, without overflow
        return h.reshape(len(h), -1)[:, 0].astype(np.float32)

    def check(self, embeddings: dict[str, Any] | None, where: str, allow_model_mismatch: bool = False) -> None:
        """Refuse embeddings of another model or dimension (``embeddings``: the manifest entry)."""
        if not embeddings:
            raise HeadError(f"{where}: has no embeddings; run `curate score` before `classify`")
        if int(embeddings["dim"]) != self.dim:
            raise HeadError(f"{self.source}: head takes {self.dim}-d embeddings, {where} has "
                            f"{embeddings['dim']}-d ({embeddings.get('model')})")
        if not allow_model_mismatch and self.models and embeddings.get("model") not in self.models:
            raise HeadError(f"{self.source}: head was made for embeddings of {' or '.join(self.models)}, "
                            f"{where} has {embeddings.get('model')!r} (set allow_model_mismatch to override)")


def _linear(sd: dict[str, np.ndarray], prefix: str) -> tuple:
    return ("linear", sd[f"{prefix}.weight"].astype(np.float32), sd[f"{prefix}.bias"].astype(np.float32))


def from_state_dict(sd: dict[str, np.ndarray], source: str) -> Head:
    """A head from a public state dict layout (aesthetic or NSFW), recognised by its key names."""
    keys = set(sd)
    if keys == set(_AESTHETIC_KEYS):
        ops = [("normalize",)] + [_linear(sd, f"layers.{i}") for i in (0, 2, 4, 6, 7)]
        _check_chain(ops, source)
        return Head("laion_aesthetic", int(sd["layers.0.weight"].shape[1]), LAION_MODELS, ops, source)
    if keys == set(_NSFW_KEYS):
        ops: list[tuple] = [("normalize",), ("standardize", sd["norm.mean"].astype(np.float32),
                                             np.sqrt(sd["norm.variance"].astype(np.float32)))]
        for i in range(1, 5):
            ops += [_linear(sd, f"linear_{i}"), ("relu",) if i < 4 else ("sigmoid",)]
        _check_chain(ops, source)
        return Head("laion_nsfw", int(sd["linear_1.weight"].shape[1]), LAION_MODELS, ops, source)
    raise HeadError(f"{source}: unknown head layout (keys {sorted(keys)[:6]}...); expected the LAION aesthetic "
                    "(layers.N.*), NeMo Curator NSFW (norm.*, linear_N.*) or a curation-head safetensors file")


def _check_chain(ops: list[tuple], source: str) -> None:
    """Consecutive layer shapes must chain and the head must end in one output."""
    width = None
    for op in ops:
        if op[0] == "standardize":
            width = len(op[1])
        if op[0] == "linear":
            w, b = op[1], op[2]
            if w.ndim != 2 or b.shape != (w.shape[0],) or (width is not None and w.shape[1] != width):
                raise HeadError(f"{source}: layer shapes do not chain ({w.shape} after width {width})")
            width = w.shape[0]
    if width != 1:
        raise HeadError(f"{source}: head must end in one output, ends in {width}")


def _from_curation(tensors: dict[str, np.ndarray], meta: dict[str, str], source: str) -> Head:
    try:
        layers = json.loads(meta["layers"])
        dim, model = int(meta["dim"]), meta["embedding_model"]
    except (KeyError, ValueError) as e:
        raise HeadError(f"{source}: curation head metadata is incomplete ({e})") from None
    ops: list[tuple] = [("normalize",)] if meta.get("normalize", "l2") == "l2" else []
    for layer in layers:
        if layer == "standardize":
            ops.append(("standardize", tensors["input.mean"], tensors["input.std"]))
        elif layer in ("relu", "sigmoid"):
            ops.append((layer,))
        else:
            ops.append(_linear(tensors, layer))
    _check_chain(ops, source)
    if ops and ops[0] == ("normalize",) and ops[1:2] and ops[1][0] == "linear" and ops[1][1].shape[1] != dim:
        raise HeadError(f"{source}: metadata says dim {dim}, first layer takes {ops[1][1].shape[1]}")
    extra = {k: v for k, v in meta.items() if k not in ("layers",)}
    return Head("curation", dim, (model,), ops, source, extra)


def load_head(path: str) -> Head:
    """Load a head file (``.safetensors``, or a ``.pth``/``.pt`` state dict) of any supported layout."""
    if not os.path.exists(path):
        raise HeadError(f"{path}: head file not found")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="numpy") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise HeadError(f"{path}: not a readable safetensors file ({e})") from None
        if meta.get("format") == HEAD_FORMAT:
            return _from_curation(tensors, meta, path)
        return from_state_dict(tensors, path)
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code: say so in one line
        raise HeadError(f"{path}: not a plain tensor state dict ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(sd, dict) or not all(hasattr(v, "numpy") for v in sd.values()):
        raise HeadError(f"{path}: expected a state dict of tensors")
    return from_state_dict({k: v.detach().float().numpy() for k, v in sd.items()}, path)


def save_head(path: str, ops: list[tuple], *, dim: int, embedding_model: str, label: str,
              extra: dict[str, Any] | None = None) -> str:
    """Write a curation head (safetensors + metadata) that :func:`load_head` reads back."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    layers: list[str] = []
    normalize = "none"
    n = 0
    for op in ops:
        if op[0] == "normalize":
            normalize = "l2"
        elif op[0] == "standardize":
            tensors["input.mean"], tensors["input.std"] = op[1].astype(np.float32), op[2].astype(np.float32)
            layers.append("standardize")
        elif op[0] == "linear":
            name = f"layers.{n}"
            tensors[f"{name}.weight"], tensors[f"{name}.bias"] = op[1].astype(np.float32), op[2].astype(np.float32)
            layers.append(name)
            n += 1
        else:
            layers.append(op[0])
    meta = {"format": HEAD_FORMAT, "embedding_model": embedding_model, "dim": str(dim), "normalize": normalize,
            "label": label, "layers": json.dumps(layers)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=meta)
    return path
