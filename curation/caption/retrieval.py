"""Retrieval captions (the GIST idea): the caption of an image is the candidate text of a
bank with the highest CLIP similarity to it, optionally restricted to the image's
predicted class.

The bank is embedded once per model (and cached per worker process); each image then costs
one matrix product against it. Works with any CLIP model; with the project-trained tiny
CLIP and the synthetic corpus's vocabulary as the bank (the demo writes it to a file) it
recovers the true captions of mismatched records of that corpus. Production code never
imports the synthetic world: the bank is always a file or a dataset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from curation.errors import ConfigError


def load_texts(source: str, what: str = "caption bank", storage_options: dict | None = None) -> list[str]:
    """Candidate texts from ``source``, in order, blank lines and duplicates dropped.

    ``source`` is a UTF-8 text file at any fsspec URL (one candidate per line), a Parquet
    file with a ``caption`` column, or a dataset root (its ``caption`` column). Errors name
    the source and say what is wrong with it.
    """
    from curation.io.fs import get_fs, join

    fs, path = get_fs(source, storage_options)
    try:
        if fs.isdir(path):
            if not fs.exists(join(path, "manifest.json")):
                raise ConfigError(f"{what} {source!r} is a folder but not a dataset (no manifest.json)")
            from curation.io import Dataset

            raw_texts = Dataset(source, storage_options).read_meta(columns=["caption"]).column("caption").to_pylist()
        elif path.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fs.open(path, "rb") as f:
                t = pq.read_table(f)
            if "caption" not in t.column_names:
                raise ConfigError(f"{what} file {source!r} has no 'caption' column")
            raw_texts = t.column("caption").to_pylist()
        else:
            data = fs.cat_file(path)
            raw_texts = (data.decode("utf-8") if isinstance(data, bytes) else data).splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {source!r} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {source!r} is not UTF-8 text") from None
    texts = list(dict.fromkeys(line.strip() for line in raw_texts if line and line.strip()))
    if not texts:
        raise ConfigError(f"{what} file {source!r} has no non-empty lines")
    return texts


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 512, device: str = "cpu") -> torch.Tensor:
    """L2-normalised CLIP text embeddings ``[len(texts), d]`` (float32, on CPU)."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[i:i + batch_size]).to(device)
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


@dataclass
class CaptionBank:
    """Candidate texts, their embeddings and (optionally) which class each belongs to.

    Attributes:
        texts: the candidates.
        emb: ``[M, d]`` normalised text embeddings.
        classes: class labels (e.g. "red circle"), or None.
        class_emb: ``[C, d]`` embeddings of the class prompts.
        member: ``[M, C]`` bool, candidate ``m`` mentions class ``c`` (as a phrase, plural ok).
    """

    texts: list[str]
    emb: torch.Tensor
    classes: list[str] | None = None
    class_emb: torch.Tensor | None = None
    member: torch.Tensor | None = None


def class_membership(texts: list[str], classes: list[str]) -> torch.Tensor:
    """``[M, C]``: does text ``m`` contain class phrase ``c`` at a word start ("red circle"
    matches "two red circles on ..." but not "a white circle on a red background")."""
    pats = [re.compile(r"\b" + re.escape(c.lower())) for c in classes]
    return torch.tensor([[bool(p.search(t.lower())) for p in pats] for t in texts], dtype=torch.bool)


def build_bank(model, tokenizer, texts: list[str], *, classes: list[str] | None = None,
               class_template: str = "a photo of a {}", device: str = "cpu") -> CaptionBank:
    """Embed a bank (and class prompts) once with ``model``."""
    bank = CaptionBank(texts, embed_texts(model, tokenizer, texts, device=device))
    if classes:
        bank.classes = list(classes)
        bank.class_emb = embed_texts(model, tokenizer, [class_template.format(c) for c in classes], device=device)
        bank.member = class_membership(texts, bank.classes)
    return bank


def retrieve(bank: CaptionBank, image_emb: torch.Tensor, *, k: int = 1,
             restrict_to_class: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` candidates per image: ``(indices [N, k], cosine similarities [N, k])``.

    With ``restrict_to_class`` each image first gets a predicted class (its most similar
    class prompt) and only candidates mentioning that class compete; a class no candidate
    mentions falls back to the whole bank.
    """
    img = F.normalize(image_emb.float(), dim=-1)
    sims = img @ bank.emb.T
    if restrict_to_class:
        if bank.member is None:
            raise ConfigError("restrict_to_class needs class labels (set `classes`)")
        assert bank.class_emb is not None  # built together with member
        pred = (img @ bank.class_emb.T).argmax(-1)
        allowed = bank.member[:, pred].T                 # [N, M]
        allowed |= ~allowed.any(dim=1, keepdim=True)     # no candidate for that class: allow all
        sims = sims.masked_fill(~allowed, float("-inf"))
    k = min(k, sims.shape[1])
    top = sims.topk(k, dim=1)
    return top.indices, top.values
