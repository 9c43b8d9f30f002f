"""``curate``: the command-line interface. Each command is a thin wrapper over a library call.

Commands live beside their package (``curation/<pkg>/commands.py``) and are registered
here. Errors derived from :class:`~curation.errors.CurationError` print one line and exit 2.
"""
from __future__ import annotations

import importlib
import os
import sys

if not os.environ.get("RAY_ADDRESS"):
    # an embedded local Ray stays on loopback (Ray would otherwise advertise the machine's
    # outward-facing address); must be set before Ray is imported
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import typer

from curation.errors import CurationError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate image-text datasets at cluster scale on Ray.")

# command name -> "module:function"
COMMANDS: dict[str, str] = {
    "synth": "curation.synth.commands:synth",
    "serve": "curation.synth.commands:serve",
    "download": "curation.download.commands:download",
    "score": "curation.score.commands:score",
    "search": "curation.score.commands:search",
    "filter": "curation.filters.commands:filter_cmd",
    "dedup": "curation.dedup.commands:dedup",
    "caption": "curation.caption.commands:caption",
    "reshard": "curation.io.commands:reshard",
    "query": "curation.io.commands:query",
    "inspect": "curation.io.commands:inspect",
    "validate": "curation.io.commands:validate",
    "run": "curation.runner.commands:run",
    "submit": "curation.runner.commands:submit",
    "status": "curation.runner.commands:status",
    "logs": "curation.runner.commands:logs",
    "train": "curation.train.commands:train",
    "report": "curation.report.commands:report",
    "demo": "curation.demo:demo",
}


def _register() -> None:
    for name, target in COMMANDS.items():
        mod, fn = target.split(":")
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:  # that package's commands are not written yet
                continue
            raise
        app.command(name)(getattr(module, fn))


_register()


def main() -> None:
    try:
        app()
    except CurationError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
