"""Files that ship inside the package: the ready-made pipelines (``curation/pipelines/*.yaml``).

They are package data, so ``curate demo`` and ``curate run laion_threshold`` work from a
wheel install with no repository checkout. The repository's top-level ``pipelines/`` holds
identical copies for README users (a test keeps the two equal).
"""
from __future__ import annotations

import os
from importlib import resources

from curation.errors import ConfigError


def pipeline_names() -> list[str]:
    """Names of the packaged pipelines (``demo``, ``laion_threshold``, ...), sorted."""
    folder = resources.files("curation").joinpath("pipelines")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def pipeline_path(name: str) -> str:
    """The file of packaged pipeline ``name`` (``demo`` or ``demo.yaml``).

    Raises:
        ConfigError: no such packaged pipeline (the message lists them).
    """
    stem = os.path.basename(name)
    stem = stem[:-5] if stem.endswith(".yaml") else stem
    path = resources.files("curation").joinpath("pipelines", f"{stem}.yaml")
    if not path.is_file():
        raise ConfigError(f"no packaged pipeline {name!r}; packaged: {', '.join(pipeline_names())}")
    return str(path)


def resolve_pipeline(arg: str) -> str:
    """``arg`` if it is a file, else the packaged pipeline it names (``laion_threshold`` or
    ``pipelines/laion_threshold.yaml`` outside a checkout); a missing file is left for the
    loader to report when no packaged pipeline has that name."""
    if os.path.exists(arg):
        return arg
    try:
        return pipeline_path(arg)
    except ConfigError:
        if os.path.sep in arg or arg.endswith((".yaml", ".yml")):
            return arg  # the loader names the missing file
        raise
