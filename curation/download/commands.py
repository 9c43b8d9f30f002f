"""``curate download INPUT --out DS``: URL lists, WebDataset shards or interleaved docs -> dataset.

Flags are generated from :class:`~curation.download.config.DownloadConfig` (every field, help
from the model). Kept from before: ``--allow-private-networks`` (any private target),
``--allow-network CIDR`` (one network, repeatable), ``--ignore-robots-txt`` and ``--overwrite``.
"""
from __future__ import annotations

from typing import Any, Optional

import typer

from curation.cli_config import Param, stage_command


def _summary(ds: Any, st: dict[str, Any]) -> str:
    status = (ds.manifest["history"][-1].get("stats") or {}).get("status", {})
    summary = ", ".join(f"{k} {v}" for k, v in sorted(status.items(), key=lambda kv: -kv[1]))
    return f"{ds.url}: {ds.num_samples} samples in {len(ds.shard_ids)} shards (v{ds.version}); {summary}"


def _derived(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args["allow_private_networks"]:
        out["allow_private_networks"] = True
    elif args["allow_network"]:
        out["allow_private_networks"] = list(args["allow_network"])
    if args["ignore_robots_txt"]:
        out["respect_robots_txt"] = False
    return out


def _prepare(args: dict[str, Any], ctx_kw: dict[str, Any]) -> None:
    ctx_kw["overwrite"] = bool(args["overwrite"])


download = stage_command(
    "download", summary=_summary, extra_config=_derived, prepare=_prepare, exclude=["allow_private_networks"],
    names={"blocklists": ("--blocklist",)},  # issue 19: `--blocklist FILE`, repeatable
    params=[
        Param("allow_private_networks", bool, typer.Option(
            False, "--allow-private-networks", help="allow any private/loopback target (tests, demos)")),
        Param("allow_network", Optional[list[str]], typer.Option(
            None, "--allow-network", metavar="CIDR", help="allow one private CIDR network (repeatable)")),
        Param("ignore_robots_txt", bool, typer.Option(
            False, "--ignore-robots-txt", help="do not fetch or honour robots.txt (same as --no-respect-robots-txt)")),
        Param("overwrite", bool, typer.Option(False, "--overwrite", help="delete an existing output first")),
    ],
    doc="Download images into a new dataset (resumable: rerun to continue).")
