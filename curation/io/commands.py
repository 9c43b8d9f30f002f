"""CLI commands over datasets: query, inspect, validate, reshard."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from curation.io.dataset import Dataset

console = Console()


def _opts(endpoint: Optional[str]) -> dict:
    return {"endpoint_url": endpoint} if endpoint else {}


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
          endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets")) -> None:
    """Query a dataset's metadata with DuckDB."""
    from curation.io.query import QueryError, query as run_query, write_result

    result = run_query(Dataset(dataset, _opts(endpoint_url)), sql)
    if format == "table" and not out:
        print_table(result, limit)
        return
    if format == "table":
        format = out.rsplit(".", 1)[-1] if "." in out else "csv"
    if not out:
        raise QueryError(f"--format {format} needs --out FILE")
    write_result(result, out, format)
    console.print(f"wrote {result.num_rows} rows to {out}")


def inspect(dataset: str = typer.Argument(..., help="dataset root"),
            endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets"),
            as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Counts, columns, versions, size and per-stage stats of a dataset."""
    from curation.io.inspect import describe

    info = describe(Dataset(dataset, _opts(endpoint_url)))
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
             endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint for s3:// datasets")) -> None:
    """Check the manifest against the files, members against rows, offsets and hashes."""
    from curation.io.validate import validate as run

    totals = run(Dataset(dataset, _opts(endpoint_url)))
    console.print(f"valid: {totals['samples']} samples, {totals['images']} images in {totals['shards']} shards")


def reshard(dataset: str = typer.Argument(..., help="input dataset"),
            out: str = typer.Option(..., "--out", help="output dataset root"),
            samples_per_shard: int = typer.Option(10_000, help="samples per output shard"),
            where: Optional[str] = typer.Option(None, help="DuckDB predicate (default: keep AND dedup_reason IS NULL)"),
            endpoint_url: Optional[str] = typer.Option(None, help="S3 endpoint")) -> None:
    """Write the kept samples into a new compact dataset."""
    from curation.io.reshard import ReshardConfig, ReshardStage
    from curation.runner.stage import StageContext

    cfg = ReshardConfig.parse({"samples_per_shard": samples_per_shard, "where": where, "output": out}, "reshard")
    ds = Dataset(dataset, _opts(endpoint_url))
    res = ReshardStage(cfg)(ds, StageContext(output=out, storage_options=_opts(endpoint_url)))
    console.print(f"wrote {res.num_samples} samples in {len(res.shard_ids)} shards to {out}")
