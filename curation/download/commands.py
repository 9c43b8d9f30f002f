"""``curate download INPUT --out DS``: URL lists, WebDataset shards or interleaved docs -> dataset."""
from __future__ import annotations

from typing import Optional

import typer


def download(
    input: str = typer.Argument(..., help="URL list (parquet/csv/tsv/jsonl/txt), MMC4/OBELICS jsonl, or WebDataset tars (brace pattern, local/s3/http)"),
    out: str = typer.Option(..., "--out", help="output dataset (local path or fsspec URL)"),
    input_format: str = typer.Option("auto", help="auto, parquet, csv, tsv, jsonl, txt, webdataset, mmc4"),
    url_col: Optional[str] = typer.Option(None, help="URL column (default: url/URL/...)"),
    caption_col: Optional[str] = typer.Option(None, help="caption column (default: caption/text/TEXT/...)"),
    uid_col: Optional[str] = typer.Option(None, help="uid column (default: uid when present)"),
    keep_columns: Optional[str] = typer.Option(None, help="comma-separated input columns to keep"),
    samples_per_shard: int = typer.Option(10_000),
    processes_count: int = typer.Option(1, help="shards downloaded at once (Ray tasks)"),
    thread_count: int = typer.Option(32, help="fetch threads per task"),
    retries: int = typer.Option(0, help="in-run retries of retryable failures"),
    image_size: int = typer.Option(256),
    resize_mode: str = typer.Option("border", help="no, keep_ratio, center_crop, border, keep_ratio_largest"),
    encode_format: str = typer.Option("jpg"),
    encode_quality: int = typer.Option(95),
    timeout: float = typer.Option(10.0, help="connect/read timeout (s)"),
    request_deadline: float = typer.Option(30.0, help="whole-request deadline (s)"),
    max_bytes: int = typer.Option(20 * 1024 * 1024),
    max_pixels: int = typer.Option(64_000_000),
    allow_private_networks: bool = typer.Option(False, help="allow private/loopback targets (tests, demos)"),
    allow_network: Optional[list[str]] = typer.Option(None, help="allow one private CIDR network (repeatable)"),
    user_agent: Optional[str] = typer.Option(None),
    ignore_robots_txt: bool = typer.Option(False, help="do not fetch or honour robots.txt"),
    per_host_concurrency: int = typer.Option(8),
    per_host_rate: Optional[float] = typer.Option(None, help="max requests/s per host"),
    retry_failed: bool = typer.Option(False, help="re-fetch retryable failures as a new metadata version"),
    overwrite: bool = typer.Option(False, help="delete an existing output first"),
) -> None:
    """Download images into a new dataset (resumable: rerun to continue)."""
    from curation.download.stage import download as run

    opts = dict(input_format=input_format, url_col=url_col, caption_col=caption_col, uid_col=uid_col,
                keep_columns=[c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns else [],
                samples_per_shard=samples_per_shard, processes_count=processes_count,
                thread_count=thread_count, retries=retries, image_size=image_size, resize_mode=resize_mode,
                encode_format=encode_format, encode_quality=encode_quality, timeout=timeout,
                request_deadline=request_deadline, max_bytes=max_bytes, max_pixels=max_pixels,
                allow_private_networks=True if allow_private_networks else list(allow_network or []) or False,
                respect_robots_txt=not ignore_robots_txt, per_host_concurrency=per_host_concurrency,
                per_host_rate=per_host_rate, retry_failed=retry_failed)
    if user_agent:
        opts["user_agent"] = user_agent

    def progress(done: int, total: int, samples: int) -> None:
        typer.echo(f"download: {done}/{total} shards", err=True)

    ds = run(input, out, overwrite=overwrite, progress=progress, **opts)
    status = ds.manifest["history"][-1]["stats"].get("status", {})
    summary = ", ".join(f"{k} {v}" for k, v in sorted(status.items(), key=lambda kv: -kv[1]))
    typer.echo(f"{ds.url}: {ds.num_samples} samples in {len(ds.shard_ids)} shards (v{ds.version}); {summary}")
