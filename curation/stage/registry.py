"""Stages register by entry point (group ``curation.stages``), so a third-party package can add one.

A package declares ``[project.entry-points."curation.stages"] mystage = "pkg.module:MyStage"``;
:func:`stage_class` resolves a name from a pipeline spec to that class. Loading is lazy
(only the named stage's module is imported), so ``curate --help`` stays fast.
"""
from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from curation.errors import ConfigError

if TYPE_CHECKING:
    from curation.stage.base import Stage

GROUP = "curation.stages"


def stage_entry_points() -> dict[str, metadata.EntryPoint]:
    """Every registered stage name -> its entry point (first registration of a name wins)."""
    out: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        out.setdefault(ep.name, ep)
    return out


def stage_names() -> list[str]:
    """Registered stage names, sorted."""
    return sorted(stage_entry_points())


def stage_class(name: str) -> type[Stage]:
    """The stage class registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones), or the entry point
            does not load to a :class:`~curation.stage.base.Stage` subclass.
    """
    from curation.stage.base import Stage

    eps = stage_entry_points()
    if name not in eps:
        raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(sorted(eps)) or '(none installed)'}")
    try:
        cls = eps[name].load()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"stage {name!r}: entry point {eps[name].value!r} does not load ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise ConfigError(f"stage {name!r}: entry point {eps[name].value!r} is not a Stage subclass")
    return cls
