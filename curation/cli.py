"""``curate``: the command-line interface. Each command is a thin wrapper over a library call.

Commands live beside their package (``curation/<pkg>/commands.py``) and are registered
here; a stage's command is generated from its config model (:mod:`curation.cli_config`).
A command module that fails to import is an error naming the module, never a missing command.
Errors derived from :class:`~curation.errors.CurationError` print one line and exit 2.
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
    "reshard": "curation.reshard.commands:reshard",
    "query": "curation.io.commands:query",
    "inspect": "curation.io.commands:inspect",
    "validate": "curation.io.commands:validate",
    "run": "curation.runner.commands:run",
    "submit": "curation.runner.commands:submit",
    "status": "curation.runner.commands:status",
    "logs": "curation.runner.commands:logs",
    "train": "curation.train.commands:train",
    "report": "curation.report.commands:report",
    "block": "curation.blocklist.commands:block",
    "classify": "curation.classify.commands:classify",
    "train-head": "curation.classify.commands:train_head",
    "faces": "curation.faces.commands:faces",
    "demo": "curation.demo:demo",
}


class CommandImportError(RuntimeError):
    """A command module failed to import (a bug in that module or a missing dependency)."""


def _register() -> None:
    for name, target in COMMANDS.items():
        mod, fn = target.split(":")
        try:
            module = importlib.import_module(mod)
        except Exception as e:
            raise CommandImportError(f"curate {name}: command module {mod} failed to import: "
                                     f"{type(e).__name__}: {e}") from e
        app.command(name)(getattr(module, fn))


_register()


def main() -> None:
    from curation.secrets import install_log_filter

    install_log_filter()  # URL passwords, signatures and secret-keyed arguments never reach a log line
    try:
        app()
    except CurationError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
