"""Typed configuration base shared by every stage.

Every stage has one pydantic model deriving from :class:`StageConfig`. Unknown keys are
rejected and validation errors are turned into :class:`~curation.errors.ConfigError`
messages that name the key path and the offending value.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curation.errors import ConfigError

T = TypeVar("T", bound="StageConfig")


class StageConfig(BaseModel):
    """Base for stage configs: strict keys, immutable, hashable into a fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
        """Validate ``data`` into this config; raise ConfigError naming ``where.key = value``."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, data or {}, where)) from None

    @classmethod
    def execution_fields(cls) -> frozenset[str]:
        """Names of the fields marked with :func:`execution` (how to run, not what to compute)."""
        return frozenset(name for name, f in cls.model_fields.items()
                         if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get(EXECUTION))

    def semantic_dump(self) -> dict[str, Any]:
        """The config's values without execution settings (JSON types).

        This is what decides a stage's output: it feeds the runner's fingerprint and the
        ``VersionWriter``/``DatasetWriter`` config hashes, so changing only an execution
        setting (workers, threads, batch size, actors, concurrency) resumes a stage instead
        of recomputing or overwriting it.
        """
        return self.model_dump(mode="json", exclude=set(self.execution_fields()))

    def fingerprint(self) -> str:
        """A stable hash of :meth:`semantic_dump`, used to detect changed configs on rerun."""
        return config_hash(self.semantic_dump())


EXECUTION = "execution"  # json_schema_extra key that marks an execution setting


def execution(default: Any = ..., **field_kwargs: Any) -> Any:
    """A pydantic ``Field`` marked as an execution setting (see :meth:`StageConfig.semantic_dump`).

    Use for settings that change how fast a stage runs but never what it writes::

        batch_size: int = execution(256, ge=1, description="samples per forward pass")

    Args:
        default: the default value (omit it and pass ``default_factory=`` for mutable ones).
        **field_kwargs: anything ``pydantic.Field`` takes (``ge``, ``description``, ...).
    """
    extra = dict(field_kwargs.pop("json_schema_extra", None) or {})
    extra[EXECUTION] = True
    if "default_factory" in field_kwargs:
        return Field(json_schema_extra=extra, **field_kwargs)
    return Field(default, json_schema_extra=extra, **field_kwargs)


def config_hash(data: Any) -> str:
    """sha256 (16 hex chars) of the canonical JSON of ``data``."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def format_validation_error(e: ValidationError, data: dict, where: str = "") -> str:
    """One line per problem: ``stages.2.threshold: Input should be a valid number (got 'x')``."""
    lines = []
    for err in e.errors():
        path = ".".join(str(p) for p in ((where,) if where else ()) + tuple(err["loc"]))
        value = err.get("input", None)
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key (value {value!r})")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {err['msg']} (got {value!r})")
    return "; ".join(lines)


def load_yaml_mapping(path: str, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file (``what``: "pipeline")."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping (got {type(data).__name__})")
    return data
