"""Pipeline specs: YAML -> validated, typed pipeline.

Validation happens before anything runs: the document against
``schemas/pipeline.schema.json``, then each stage's config against that stage's
``StageConfig``. Every error names the key path (``stages.2.config.threshold``) and the
offending value. ``--set key.path=value`` overrides are applied first (values parsed as
YAML scalars, so ``0.3`` is a number and ``true`` a boolean).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import yaml

from curation.config import StageConfig, config_hash, load_yaml_mapping
from curation.errors import ConfigError
from curation.io.format import load_schema
from curation.stage import stage_class, stage_names


@dataclass
class StageSpec:
    index: int
    stage: str
    name: str
    config: StageConfig


@dataclass
class Pipeline:
    name: str
    input: str
    output: str
    stages: list[StageSpec]
    ray: dict[str, Any]
    storage_options: dict[str, Any]
    raw: dict[str, Any]

    def fingerprints(self) -> list[str]:
        """Chained fingerprints: stage i's changes with what its config or any earlier one's computes."""
        out, prev = [], config_hash({"input": self.input})
        for s in self.stages:
            # the semantic dump: execution settings (workers, batch sizes, ...) never change it
            prev = config_hash({"prev": prev, "stage": s.stage, "config": s.config.semantic_dump()})
            out.append(prev)
        return out


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.0.c=value`` overrides (list indices allowed) to a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        path, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        keys = path.split(".")
        node: Any = doc
        for i, name in enumerate(keys):
            k: Any = name
            last = i == len(keys) - 1
            where = ".".join(keys[: i + 1])
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ConfigError(f"--set {path}: {where} is not an index of a list of {len(node)}")
                k = int(k)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {path}: {'.'.join(keys[:i])} is not a mapping")
            if last:
                node[k] = value
            else:
                if isinstance(node, dict) and k not in node:
                    node[k] = {}
                node = node[k]
    return doc


def _schema_error(doc: dict[str, Any]) -> str | None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema("pipeline"))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    msgs = []
    for e in errors[:5]:
        path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        if e.validator == "additionalProperties":
            msgs.append(f"{path}: {e.message}")
        elif e.validator == "required":
            msgs.append(f"{path}: {e.message}")
        else:
            msgs.append(f"{path}: {e.message} (got {e.instance!r})")
    return "; ".join(msgs)


def load_pipeline(path_or_doc: str | dict[str, Any], overrides: list[str] | None = None) -> Pipeline:
    """Parse and validate a pipeline; raise ConfigError naming the key path and value."""
    if isinstance(path_or_doc, dict):
        doc, where = path_or_doc, "pipeline"
    else:
        doc, where = load_yaml_mapping(path_or_doc, "pipeline"), path_or_doc
    doc = apply_overrides(doc, overrides or [])
    problem = _schema_error(doc)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    stages = []
    classes = []
    for i, s in enumerate(doc["stages"]):
        try:
            cls = stage_class(s["stage"])
        except ConfigError as e:
            raise ConfigError(f"{where}: stages.{i}.stage: {e}") from None
        raw = dict(s.get("config") or {})
        if cls.takes_input and i == 0:
            raw.setdefault("input", doc["input"])  # the pipeline's input feeds its first stage
        elif cls.takes_input:
            raise ConfigError(f"stages.{i}.stage: {s['stage']!r} reads the pipeline input, so it can only be "
                              "the first stage")
        cfg = cls.Config.parse(raw, where=f"stages.{i}.config")
        stages.append(StageSpec(i, s["stage"], s.get("name") or s["stage"], cfg))
        classes.append(cls)
    if not classes[0].takes_input and not _is_dataset(doc["input"], doc.get("storage_options")):
        takers = [n for n in stage_names() if stage_class(n).takes_input]
        raise ConfigError(f"input: {doc['input']!r} is not a dataset (no manifest.json) and the first stage "
                          f"{stages[0].stage!r} does not read raw input (stages that do: {', '.join(takers)})")
    return Pipeline(doc["name"], doc["input"], doc["output"], stages, doc.get("ray") or {},
                    doc.get("storage_options") or {}, doc)


def _is_dataset(url: str, storage_options: dict | None) -> bool:
    from curation.io.fs import get_fs, join

    try:
        fs, root = get_fs(url, storage_options)
        return fs.exists(join(root, "manifest.json"))
    except Exception:
        return False


def resolve_relative(pipeline_path: str, value: str) -> str:
    """Paths in a spec are relative to the current directory, like every CLI path."""
    return value if "://" in value or os.path.isabs(value) else os.path.abspath(value)
