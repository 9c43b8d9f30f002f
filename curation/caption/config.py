"""The caption stage's typed configuration."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from curation.augment import Views
from curation.config import StageConfig, execution

if TYPE_CHECKING:
    from curation.caption.search import DecodeOptions


class CaptionConfig(StageConfig):
    """How synthetic captions are made, scored and mixed with the raw ones.

    Attributes:
        method: ``coca`` (generate with an open_clip CoCa model) or ``retrieval`` (pick the
            most CLIP-similar text of a bank).
        model, pretrained: the CoCa model (any open_clip form: tag, ``hf-hub:``, file,
            project checkpoint folder); used by ``coca`` only.
        decoding: ``greedy``, ``sample`` (temperature/top_k/top_p, seeded) or ``beam``.
        max_new_tokens / min_new_tokens: caption length bounds in tokens.
        temperature: sampling temperature.
        top_k: sampling keeps the k most likely tokens (0: all).
        top_p: sampling keeps the smallest set of tokens with this probability mass (1: all).
        num_beams: beam search width.
        length_penalty: beam search scores a hypothesis ``sum logp / len**length_penalty``.
        seed: seed of sampled decoding.
        bank: retrieval candidates: a text file URL (one caption per line), a Parquet file or a
            dataset (its ``caption`` column). The demo writes the synthetic corpus's vocabulary
            to a file and passes it here.
        classes: optional class labels (a file, one per line) to restrict retrieval to the
            image's predicted class (``restrict_to_class``), prompted with ``class_template``.
        restrict_to_class: retrieve only among candidates of the image's predicted class.
        class_template: the prompt of a class label, ``{}`` standing for the label.
        views: retrieval with test-time augmentation: the candidate is the one nearest the
            mean image embedding over the horizontal flip (``flip``) or all 8 symmetries of
            the square (``dihedral``; only for captions without orientation, such as the
            synthetic corpus's: +5 points of exact retrieval on its eval pairs with a 900-step
            demo model, +1 record of 403 on the demo's downloaded images). Scores
            (``synthetic_clip_score``) always use the plain image, so they stay comparable
            with ``clip_score``.
        clip_model, clip_pretrained: the CLIP that scores raw and synthetic pairs (and
            retrieves). Default: the model of the dataset's last ``score`` stage, so
            ``synthetic_clip_score`` is comparable with ``clip_score``.
        threshold: the CLIP rule of the mixing policy (pass iff score >= threshold).
        mode: ``mix`` (Nguyen et al. 2023) or ``both`` (keep both, LaCLIP-style).
        batch_size: images per forward pass. device: ``auto`` uses CUDA when a task sees one.
        num_cpus, num_gpus: Ray resources per shard task.
    """

    method: Literal["coca", "retrieval"] = "coca"
    model: str = "coca_ViT-L-14"
    pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k"
    decoding: Literal["greedy", "sample", "beam"] = "greedy"
    max_new_tokens: int = Field(default=30, ge=1, le=255)
    min_new_tokens: int = Field(default=4, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    num_beams: int = Field(default=3, ge=1, le=32)
    length_penalty: float = 1.0
    seed: int = 0
    bank: str | None = None
    classes: str | None = None
    restrict_to_class: bool = False
    views: Views = "none"
    class_template: str = "a photo of a {}"
    clip_model: str | None = None
    clip_pretrained: str | None = None
    threshold: float = 0.28
    mode: Literal["mix", "both"] = "mix"
    batch_size: int = execution(64, ge=1, le=65536)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_cpus: float = execution(1.0, gt=0)
    num_gpus: float = execution(0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "CaptionConfig":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})")
        if self.restrict_to_class and not self.classes:
            raise ValueError("restrict_to_class needs `classes` (a file of class labels)")
        if "{}" not in self.class_template:
            raise ValueError(f"class_template must contain '{{}}' (got {self.class_template!r})")
        return self

    def decode_options(self) -> DecodeOptions:
        from curation.caption.search import DecodeOptions  # imports torch: only when decoding

        return DecodeOptions(method=self.decoding, max_new_tokens=self.max_new_tokens,
                             min_new_tokens=self.min_new_tokens, temperature=self.temperature,
                             top_k=self.top_k, top_p=self.top_p, num_beams=self.num_beams,
                             length_penalty=self.length_penalty, seed=self.seed)
