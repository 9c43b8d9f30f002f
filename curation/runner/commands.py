"""``curate run | submit | status | logs``."""
from __future__ import annotations

import json
import os
from typing import List, Optional

import typer
from rich.console import Console

from curation.cli_config import BREAK_LEASE_HELP

console = Console()


DEFAULT_JOB_ADDRESS = os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265")
PIPELINE_HELP = "pipeline YAML, or the name of a packaged one (demo, laion_threshold, clip_top30, align_noisy)"


def run(pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
        set_: List[str] = typer.Option([], "--set", help="override a key: stages.2.config.threshold=0.3"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray address (default RAY_ADDRESS or local)"),
        as_json: bool = typer.Option(False, "--json", help="print the run record as JSON at the end"),
        break_lease: bool = typer.Option(False, "--break-lease", help=BREAK_LEASE_HELP)) -> None:
    """Run a pipeline on an embedded local Ray or a cluster; rerun to resume."""
    from curation.resources import resolve_pipeline
    from curation.runner.executor import run_pipeline
    from curation.runner.progress import StageProgress, stats_table
    from curation.runner.spec import load_pipeline

    if break_lease:
        os.environ["CURATION_BREAK_LEASE"] = "1"  # read by the writers (curation.io.lease), in workers too
    p = load_pipeline(resolve_pipeline(pipeline), set_)
    with StageProgress() as bars:
        record = run_pipeline(p, address=address, progress=bars)
    console.print(stats_table(record))
    console.print(f"output: {p.output}")
    if as_json:
        print(json.dumps(record, default=str))


def submit(pipeline: str = typer.Argument(..., help=PIPELINE_HELP),
           address: str = typer.Option(..., "--address", help="job server, e.g. http://127.0.0.1:8265"),
           set_: List[str] = typer.Option([], "--set", help="override a key (as in `curate run`)"),
           ship_code: bool = typer.Option(False, help="upload this checkout's `curation` package with the job"),
           wait: bool = typer.Option(False, help="wait for the job and print its logs")) -> None:
    """Submit a pipeline as a Ray Job; prints the job id (follow with `curate status/logs`)."""
    from curation.resources import resolve_pipeline
    from curation.runner.jobs import submit_pipeline, wait_for_job

    job_id = submit_pipeline(resolve_pipeline(pipeline), address, overrides=set_, ship_code=ship_code)
    console.print(f"submitted job {job_id}")
    print(job_id)
    if wait:
        status, logs = wait_for_job(address, job_id)
        print(logs)
        console.print(f"job {job_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


def status(job_id: str = typer.Argument(...),
           address: str = typer.Option(DEFAULT_JOB_ADDRESS, "--address")) -> None:
    """Status of a submitted pipeline job."""
    from curation.runner.jobs import client

    print(client(address).get_job_status(job_id).value)


def logs(job_id: str = typer.Argument(...),
         address: str = typer.Option(DEFAULT_JOB_ADDRESS, "--address"),
         follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends")) -> None:
    """Logs of a submitted pipeline job."""
    from curation.runner.jobs import client, follow_logs

    if follow:
        follow_logs(address, job_id)
    else:
        print(client(address).get_job_logs(job_id), end="")
