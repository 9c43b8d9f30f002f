"""CLI: ``curate synth`` (draw a corpus) and ``curate serve`` (serve it on loopback)."""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import typer

from curation.synth.corpus import generate
from curation.synth.urls import write_url_list


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the corpus into."),
    samples: int = typer.Option(2000, "--samples", help="Records in the URL list."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    base_url: str = typer.Option("http://127.0.0.1:8765", "--base-url",
                                 help="Server address the URL list points at."),
    slices: str = typer.Option("2023,2024,2025", "--slices", help="Comma-separated time slices."),
    seed_samples: int = typer.Option(1500, "--seed-samples", help="Clean pairs in seed.parquet."),
    eval_per_slice: int = typer.Option(200, "--eval-per-slice", help="Clean pairs per slice in eval.parquet."),
) -> None:
    """Draw a synthetic noisy web corpus (images, urls.parquet, truth.parquet, seed/eval sets)."""
    summary = generate(out, samples=samples, seed=seed, base_url=base_url,
                       slices=tuple(s.strip() for s in slices.split(",") if s.strip()),
                       seed_samples=seed_samples, eval_per_slice=eval_per_slice)
    typer.echo(f"wrote {summary['samples']} records to {out}")
    typer.echo("noise: " + json.dumps(summary["noise_counts"]))
    typer.echo("expected status: " + json.dumps(summary["expected_status_counts"]))


def serve(
    corpus: Path = typer.Argument(..., help="A folder written by `curate synth`."),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0 picks a free one)."),
    stall_seconds: float = typer.Option(60.0, "--stall-seconds", help="How long timeout URLs stall."),
    rewrite_urls: bool = typer.Option(False, "--rewrite-urls",
                                      help="Point the corpus's URL list at this server's address."),
) -> None:
    """Serve a synthetic corpus on 127.0.0.1 with its faults until Ctrl-C."""
    from curation.synth.server import SynthServer

    server = SynthServer(corpus, port=port, stall_seconds=stall_seconds).start()
    try:
        if rewrite_urls:
            write_url_list(corpus, server.base_url)
        # Ctrl-C and SIGTERM only set the event (no KeyboardInterrupt raised wherever the main
        # thread happens to be), and both are in place before the address is printed: a supervisor
        # that signals as soon as it reads the line always gets a clean shutdown and exit code 0.
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"serving {corpus} at {server.base_url}")
        sys.stdout.flush()  # a supervising process reads the address from a pipe
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
