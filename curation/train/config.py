"""The typed run spec of ``curate train RUN.yaml`` (errors name the key path and value)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.config import StageConfig


class ModelSpec(StageConfig):
    """Any open_clip architecture: random init, a ``pretrained`` tag/file, or a checkpoint folder."""

    name: str = "curation-tiny"
    pretrained: str | None = None


class SliceSpec(StageConfig):
    """One training slice: a dataset (curated dataset URL or Parquet file with ``image`` bytes)
    and an optional SQL ``where`` subset; evaluated on ``eval_dataset``/``eval_where``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str
    where: str | None = None
    eval_dataset: str | None = None   # default: the run's eval_dataset, else this slice's dataset
    eval_where: str | None = None     # default: this slice's where
    steps: int | None = Field(default=None, ge=1)  # default: the run's steps_per_slice


class ReplaySpec(StageConfig):
    """Which earlier data is mixed into each slice (TiC-CLIP's buffers, or a reservoir).

    ``budget_samples``/``budget_bytes`` bound the replay buffer (default for ``exp``/``equal``:
    the current slice's size; ``reservoir`` needs one of them; ``all`` ignores them).
    """

    policy: Literal["none", "all", "exp", "equal", "reservoir"] = "none"
    budget_samples: int | None = Field(default=None, ge=1)
    budget_bytes: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _reservoir_budget(self):
        if self.policy == "reservoir" and not (self.budget_samples or self.budget_bytes):
            raise ValueError("policy 'reservoir' needs budget_samples or budget_bytes")
        return self


class LossSpec(StageConfig):
    """CLIP contrastive loss plus optional Mod-X distillation and alignment/uniformity terms."""

    modx_alpha: float = Field(default=0.0, ge=0)
    align_weight: float = Field(default=0.0, ge=0)
    uniform_weight: float = Field(default=0.0, ge=0)


class RunConfig(StageConfig):
    """A continual run: slices in order, a model, a per-slice step budget, AdamW + cosine."""

    out: str
    model: ModelSpec = ModelSpec()
    slices: list[SliceSpec] = Field(min_length=1)
    eval_dataset: str | None = None
    zeroshot_template: str = "{}"
    steps_per_slice: int = Field(default=100, ge=1)
    batch_size: int = Field(default=256, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    replay: ReplaySpec = ReplaySpec()
    loss: LossSpec = LossSpec()
    checkpoint_every: int = Field(default=50, ge=1)
    seed: int = 0
    backend: Literal["local", "torchrun", "ray"] = "local"
    num_workers: int = Field(default=2, ge=1)   # ray backend only
    data_workers: int = Field(default=0, ge=0)  # DataLoader workers per rank for streamed slices
    storage_options: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_slice_names(self):
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names):
            raise ValueError(f"slice names must be unique (got {names})")
        return self

    def slice_steps(self, k: int) -> int:
        return self.slices[k].steps or self.steps_per_slice
