"""``curate demo`` / ``make demo``: DESIGN.md section 7 end to end on an embedded local Ray.

1. draw the synthetic noisy web corpus (+ ground truth) and serve it on 127.0.0.1;
2. train the small filter CLIP on the clean seed set (the Data-Filtering-Network idea);
3. run ``pipelines/demo.yaml``: download -> score -> dedup -> caption -> filter -> reshard;
4. stream the curated output into a short continual run over the time slices;
5. write the HTML report and print the summary: records in, kept, removed by reason, and
   precision/recall of each removal kind against the ground truth.

Everything stays on this machine; nothing is downloaded.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the seed CLIP's operating point on the synthetic corpus: a sweep of the raw-caption score on
# the 2000-record demo gave P/R 0.96/0.75 at 0.25, 0.89/0.86 at 0.4, 0.83/0.91 at 0.5
DEMO_THRESHOLD = 0.4
# the filter CLIP's architecture (models.TINY_CONFIGS): a small ResNet tower, trained with the
# square's 8 symmetries as augmentation (the synthetic scenes have no orientation)
FILTER_MODEL = "curation-tiny-rn"


def _step(msg: str) -> float:
    console.print(f"[bold cyan]==>[/bold cyan] {msg}")
    return time.perf_counter()


def write_url_list_with_slices(corpus: str, base_url: str, out_path: str) -> str:
    """The corpus URL list for ``base_url`` plus the crawl's time slice of every record."""
    import pyarrow.parquet as pq

    from curation.synth import write_url_list

    write_url_list(corpus, base_url, out_path)
    urls = pq.read_table(out_path)
    truth = pq.read_table(os.path.join(corpus, "truth.parquet"), columns=["uid", "slice"])
    slice_of = dict(zip(truth.column("uid").to_pylist(), truth.column("slice").to_pylist()))
    import pyarrow as pa

    urls = urls.append_column("slice", pa.array([slice_of[u] for u in urls.column("uid").to_pylist()]))
    pq.write_table(urls, out_path)
    return out_path


def train_filter_clip(corpus: str, out_dir: str, steps: int, seed: int) -> str:
    import pyarrow.parquet as pq

    from curation.train.seed import train_seed_clip

    pairs = pq.read_table(os.path.join(corpus, "seed.parquet"), columns=["image", "caption"])
    return train_seed_clip(pairs, out_dir=out_dir, model=FILTER_MODEL, steps=steps, batch_size=256,
                           lr=4e-3, seed=seed, augment=True, log_every=max(steps // 4, 1))


def run_curation(urls: str, run_dir: str, checkpoint: str, overrides: list[str]) -> dict[str, Any]:
    from curation.runner.executor import run_pipeline
    from curation.runner.progress import StageProgress
    from curation.runner.spec import load_pipeline

    p = load_pipeline(os.path.join(ROOT, "pipelines", "demo.yaml"),
                      [f"input={urls}", f"output={run_dir}", f"stages.1.config.pretrained={checkpoint}",
                       *overrides])
    with StageProgress() as bars:
        return run_pipeline(p, progress=bars)


def run_continual(run_dir: str, corpus: str, checkpoint: str, steps: int, seed: int) -> dict[str, Any]:
    """A short continual run over the curated output's time slices (warm start: the filter CLIP)."""
    from curation.train.config import RunConfig
    from curation.train.run import run_continual as run

    from curation.io.query import query

    curated = os.path.join(run_dir, "curated")
    counts = query(curated, "SELECT slice, count(*) AS n FROM samples GROUP BY slice").to_pylist()
    smallest = min((r["n"] for r in counts), default=0)
    batch = max(8, min(128, smallest // 2))  # small demos have small slices
    slices = [{"name": s, "dataset": curated, "where": f"slice = '{s}'",
               "eval_dataset": os.path.join(corpus, "eval.parquet"), "eval_where": f"slice = '{s}'"}
              for s in ("2023", "2024", "2025")]
    cfg = RunConfig.parse({"out": os.path.join(run_dir, "train"), "slices": slices,
                           "model": {"name": "curation-tiny"},
                           "steps_per_slice": steps, "batch_size": batch, "lr": 5e-4, "warmup_steps": 5,
                           "replay": {"policy": "exp"}, "loss": {"modx_alpha": 1.0},
                           "checkpoint_every": max(steps, 1), "seed": seed}, where="train")
    return run(cfg)


def evaluate(run_dir: str, corpus: str, threshold: float) -> dict[str, Any]:
    """Precision/recall of every removal kind against the corpus's ground truth."""
    from curation.demo_eval import evaluate_run

    return evaluate_run(run_dir, corpus, threshold)


def print_summary(ev: dict[str, Any]) -> None:
    t = Table(title="curation funnel")
    t.add_column("records in")
    t.add_column("downloaded")
    t.add_column("kept")
    t.add_column("removed by reason")
    f = ev["funnel"]
    t.add_row(str(f["records_in"]), str(f["downloaded"]), str(f["kept"]),
              ", ".join(f"{k}={v}" for k, v in f["removed"].items()))
    console.print(t)
    t = Table(title="removal kinds against the ground truth")
    for c in ("kind", "flagged", "truth", "precision", "recall"):
        t.add_column(c)
    for name, m in ev["pr"].items():
        t.add_row(name, str(m["predicted"]), str(m["truth"]), f"{m['precision']:.3f}", f"{m['recall']:.3f}")
    console.print(t)
    for line in ev["notes"]:
        console.print(line)


def demo(out: str = typer.Option("out/demo", "--out", help="where everything is written"),
         samples: int = typer.Option(2000, "--samples", help="corpus size (records)"),
         seed: int = typer.Option(0, "--seed"),
         seed_pairs: int = typer.Option(3000, help="clean seed pairs the filter CLIP trains on"),
         seed_steps: int = typer.Option(1500, help="training steps of the filter CLIP (batch 256)"),
         train_steps: int = typer.Option(40, help="steps per slice of the continual run"),
         fresh: bool = typer.Option(True, help="start from scratch (else resume what is there)"),
         as_json: Optional[str] = typer.Option(None, "--json", help="also write the summary as JSON here")) -> None:
    """Run the embedded demo end to end (DESIGN.md section 7) and print what curation removed."""
    import shutil

    from curation.report import build_report
    from curation.synth import generate
    from curation.synth.server import SynthServer

    t_all = time.perf_counter()
    out = os.path.abspath(out)
    if fresh and os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    corpus, run_dir = os.path.join(out, "synth"), os.path.join(out, "run")
    timings: dict[str, float] = {}

    t = _step(f"drawing a synthetic noisy web corpus of {samples} records")
    if not os.path.exists(os.path.join(corpus, "truth.parquet")):
        generate(corpus, samples=samples, seed=seed, seed_samples=seed_pairs)
    timings["synth"] = time.perf_counter() - t

    t = _step("training the small filter CLIP on the clean seed set")
    checkpoint = os.path.join(out, "seed_clip")
    if not os.path.exists(os.path.join(checkpoint, "config.json")):
        train_filter_clip(corpus, checkpoint, seed_steps, seed)
    timings["seed_clip"] = time.perf_counter() - t

    with SynthServer(corpus) as server:
        console.print(f"serving the corpus at {server.base_url} (loopback only)")
        urls = write_url_list_with_slices(corpus, server.base_url, os.path.join(out, "urls.parquet"))
        t = _step("curating: download -> score -> dedup -> caption -> filter -> reshard")
        record = run_curation(urls, run_dir, checkpoint, [])
        timings["pipeline"] = time.perf_counter() - t

    t = _step("streaming the curated output into a continual run over the time slices")
    train = run_continual(run_dir, corpus, checkpoint, train_steps, seed)
    timings["continual"] = time.perf_counter() - t

    t = _step("writing the report")
    report = build_report(run_dir, os.path.join(out, "report.html"),
                          truth=os.path.join(corpus, "truth.parquet"))
    timings["report"] = time.perf_counter() - t

    from curation.runner.progress import stats_table
    from curation.train.metrics import format_matrix

    console.print(stats_table(record))
    ev = evaluate(run_dir, corpus, threshold=DEMO_THRESHOLD)
    print_summary(ev)
    rows = json.load(open(os.path.join(run_dir, "train", "eval_rows.json")))
    for metric in ("i2t_r1", "zeroshot_acc"):
        if metric in train:
            console.print(format_matrix(rows, ["2023", "2024", "2025"], metric))
            s = train[metric]
            console.print(f"  mean forgetting {s['mean_forgetting']:.3f}  backward transfer "
                          f"{s['backward_transfer']:.3f}  forward transfer {s['forward_transfer']:.3f}")
    timings["total"] = time.perf_counter() - t_all
    console.print("timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    console.print(f"report: {report}")
    if as_json:
        with open(as_json, "w") as f:
            json.dump({"evaluation": ev, "timings": timings, "continual": _jsonable(train)}, f, indent=1,
                      default=str)


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x, default=str)
        return x
    except (TypeError, ValueError):
        return str(x)
