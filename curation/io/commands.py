"""CLI commands over datasets: query, inspect, validate (``curate reshard`` lives in ``curation/reshard``)."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from curation.io.dataset import Dataset

console = Console()


STORAGE_HELP = "fsspec storage option for the dataset URL, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)"


def _opts(endpoint: Optional[str], items: Optional[list[str]] = None) -> dict:
    from curation.cli_config import storage_options_from

    return storage_options_from(items, endpoint)


def print_table(table, limit: int = 50, title: str | None = None) -> None:
    """Render an Arrow table in the terminal (first ``limit`` rows)."""
    t = Table(title=title, show_lines=False)
    for name in table.column_names:
        t.add_column(name, overflow="fold")
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*[_cell(v) for v in row.values()])
    console.print(t)
    if table.num_rows > limit:
        console.print(f"... {table.num_rows - limit} more rows (use --out to write them all)")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return f"[{len(v)} values]"
    return "" if v is None else str(v)


def query(dataset: str = typer.Argument(..., help="dataset root (path or fsspec URL)"),
          sql: str = typer.Argument(..., help="DuckDB SQL over views `samples` and `embeddings`"),
          format: str = typer.Option("table", "--format", help="table, csv, json or parquet"),
          out: Optional[str] = typer.Option(None, "--out", help="write the result to this file"),
          limit: int = typer.Option(50, help="rows shown in table format"),
          endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets"),
          storage_option: Optional[list[str]] = typer.Option(None, "--storage-option", metavar="KEY=VALUE",
                                                             help=STORAGE_HELP)) -> None:
    """Query a dataset's metadata with DuckDB.

    Runs your SQL with full DuckDB access (files, extensions); predicates from configs,
    pipelines and loaders (``--where``) run sandboxed.
    """
    from curation.io.query import QueryError, write_result
    from curation.io.query import query as run_query

    result = run_query(Dataset(dataset, _opts(endpoint_url, storage_option)), sql)
    if format == "table" and not out:
        print_table(result, limit)
        return
    if not out:
        raise QueryError(f"--format {format} needs --out FILE")
    if format == "table":
        format = out.rsplit(".", 1)[-1] if "." in out else "csv"
    write_result(result, out, format)
    console.print(f"wrote {result.num_rows} rows to {out}")


def inspect(dataset: str = typer.Argument(..., help="dataset root"),
            endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets"),
            storage_option: Optional[list[str]] = typer.Option(None, "--storage-option", metavar="KEY=VALUE",
                                                               help=STORAGE_HELP),
            as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Counts, columns, versions, size and per-stage stats of a dataset."""
    from curation.io.inspect import describe

    info = describe(Dataset(dataset, _opts(endpoint_url, storage_option)))
    if as_json:
        print(json.dumps(info, indent=1, default=str))
        return
    console.print(f"[bold]{info['url']}[/bold]  version {info['version']}  "
                  f"{info['num_samples']} samples in {info['num_shards']} shards, {info['tar_bytes'] / 1e6:.1f} MB")
    console.print("status: " + ", ".join(f"{k}={v}" for k, v in info["status_counts"].items()))
    console.print("columns: " + ", ".join(info["columns"]))
    t = Table(title="history")
    for c in ("version", "stage", "config", "in", "out", "seconds", "samples/s", "dropped"):
        t.add_column(c)
    for h in info["history"]:
        s = h.get("stats") or {}
        t.add_row(str(h["version"]), h["stage"], h["config_hash"], str(s.get("samples_in", "")),
                  str(s.get("samples_out", "")), str(s.get("seconds", "")), str(s.get("samples_per_s", "")),
                  ", ".join(f"{k}={v}" for k, v in (s.get("dropped") or {}).items()))
    console.print(t)


def validate(dataset: str = typer.Argument(..., help="dataset root"),
             endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets"),
             storage_option: Optional[list[str]] = typer.Option(None, "--storage-option", metavar="KEY=VALUE",
                                                                help=STORAGE_HELP)) -> None:
    """Check the manifest against the files, members against rows, offsets and hashes."""
    from curation.io.validate import validate as run

    totals = run(Dataset(dataset, _opts(endpoint_url, storage_option)))
    console.print(f"valid: {totals['samples']} samples, {totals['images']} images in {totals['shards']} shards")

