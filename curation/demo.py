"""``curate demo`` / ``make demo``: DESIGN.md section 7 end to end on an embedded local Ray.

1. draw the synthetic noisy web corpus (+ ground truth) and serve it on 127.0.0.1;
2. train the small filter CLIP on the clean seed set (the Data-Filtering-Network idea);
3. run the packaged ``curation/pipelines/demo.yaml``: download -> score -> dedup -> caption ->
   filter -> reshard (the download runs while the filter CLIP trains: it needs no model); the
   CLIP threshold of caption mixing and filtering is the split of this run's own scores
   (:func:`mismatch_threshold`, computed after the score stage);
4. stream the curated output into a short continual run over the time slices;
5. write the HTML report and print the summary: records in, kept, removed by reason, and
   precision/recall of each removal kind against the ground truth.

Everything stays on this machine; nothing is downloaded. The trained filter CLIP is cached
(``~/.cache/curation/demo-seed-clip/<key>``, or under ``$CURATION_CACHE``), keyed by everything that
determines its weights (the seed pairs' bytes, the recipe, the training code, torch and
open_clip versions); ``--no-cache`` retrains it. A first run never depends on the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

console = Console()
# the pipeline file's CLIP threshold (caption mixing + filter), for `curate run` by hand. The demo
# replaces it by the split of this run's own scores (mismatch_threshold), so the operating point
# follows the trained filter CLIP (a shorter --seed-steps, another seed) instead of one number
DEMO_THRESHOLD = 0.4
# fewer scored records than this: too few to split, the pipeline's threshold is kept
MIN_SCORES_TO_SPLIT = 50
# the filter CLIP's architecture (models.TINY_CONFIGS): a small ResNet tower, trained with the
# square's 8 symmetries as augmentation (the synthetic scenes have no orientation)
FILTER_MODEL = "curation-filter-rn"
FILTER_LR = 4e-3
FILTER_BATCH = 256
# re-served copies of each seed pair in the filter CLIP's training set (augment.web_copy): the
# crawl's images are cropped and recompressed, the seed pairs are whole lossless pictures
FILTER_WEB_COPIES = 1
# the code that decides the filter CLIP's weights (part of the cache key)
_TRAINING_CODE = ("train/seed.py", "train/data.py", "train/losses.py", "train/optim.py", "augment.py", "models.py")


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
    return train_seed_clip(pairs, out_dir=out_dir, model=FILTER_MODEL, steps=steps, batch_size=FILTER_BATCH,
                           lr=FILTER_LR, seed=seed, augment=True, web_copies=FILTER_WEB_COPIES,
                           log_every=max(steps // 4, 1))


def filter_clip_key(corpus: str, steps: int, seed: int) -> str:
    """Hash of everything that determines the filter CLIP's weights (the cache key)."""
    import open_clip
    import torch

    from curation.models import TINY_CONFIGS

    h = hashlib.sha256()
    with open(os.path.join(corpus, "seed.parquet"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    pkg = os.path.dirname(os.path.abspath(__file__))
    code = hashlib.sha256(b"".join(open(os.path.join(pkg, p), "rb").read() for p in _TRAINING_CODE)).hexdigest()
    recipe = {"pairs": h.hexdigest(), "model": FILTER_MODEL, "arch": TINY_CONFIGS[FILTER_MODEL], "steps": steps,
              "batch_size": FILTER_BATCH, "lr": FILTER_LR, "seed": seed, "augment": True,
              "web_copies": FILTER_WEB_COPIES, "code": code,
              "torch": torch.__version__, "open_clip": open_clip.__version__,
              "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> str:
    return os.environ.get("CURATION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "curation")


def filter_clip(corpus: str, checkpoint: str, steps: int, seed: int, use_cache: bool) -> str:
    """Train the filter CLIP into ``checkpoint``, or copy it from the cache (``use_cache``: a
    model trained before from the same key). Returns where it came from: ``trained`` or ``cache``."""
    cached = os.path.join(cache_root(), "demo-seed-clip", filter_clip_key(corpus, steps, seed)) if use_cache else None
    if cached and os.path.exists(os.path.join(cached, "config.json")):
        shutil.copytree(cached, checkpoint, dirs_exist_ok=True)
        return "cache"
    train_filter_clip(corpus, checkpoint, steps, seed)
    if cached:
        try:
            tmp = f"{cached}.tmp-{os.getpid()}"
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True)
            os.replace(tmp, cached)  # atomic: a reader sees the whole model or none
        except OSError as e:  # a read-only home must not fail the demo
            console.print(f"note: could not cache the filter CLIP ({e})")
    return "trained"


def mismatch_threshold(scores: "ArrayLike") -> float:
    """The CLIP score that best splits ``scores`` in two groups (Otsu's method, exact on the
    sorted scores): the cut maximising the between-group variance ``w0 w1 (m0 - m1)^2``.

    The raw-caption scores of a crawl are bimodal, true captions near the top and unrelated
    ones near zero; the cut between the modes is the operating point of the mismatch filter. It
    uses no labels and nothing of the scorecard: only the scores the pipeline computed.
    Returns the midpoint between the two scores at the cut.
    """
    import numpy as np

    x = np.asarray(scores, dtype=np.float64)
    x = np.sort(x[~np.isnan(x)])  # NaN: not scored
    if len(x) < 2 or x[0] == x[-1]:
        raise ValueError(f"mismatch_threshold: need at least two distinct scores (got {len(x)})")
    n = len(x)
    k = np.arange(1, n)                        # group 0 = x[:k]
    c = np.cumsum(x)[:-1]
    m0, m1 = c / k, (x.sum() - c) / (n - k)
    between = k * (n - k) * (m0 - m1) ** 2
    between[x[1:] == x[:-1]] = -1.0            # never cut between equal scores
    i = int(np.argmax(between))
    return float((x[i] + x[i + 1]) / 2)


def scored_threshold(run_dir: str) -> tuple[float, int]:
    """(mismatch threshold of this run's raw-caption CLIP scores, how many scores it split);
    the pipeline's threshold when too few records were scored to split."""
    import numpy as np

    from curation.io import Dataset

    ds = Dataset(os.path.join(run_dir, "dataset"))
    scores = ds.read_meta(columns=["clip_score"]).column("clip_score").drop_null().to_numpy()
    if len(scores) < MIN_SCORES_TO_SPLIT or np.ptp(scores) == 0:
        return DEMO_THRESHOLD, len(scores)
    return round(mismatch_threshold(scores), 3), len(scores)


def demo_pipeline(urls: str, run_dir: str, checkpoint: str, overrides: list[str]) -> Any:
    """The packaged demo pipeline pointed at this run's URL list, output and filter CLIP."""
    from curation.resources import pipeline_path
    from curation.runner.spec import load_pipeline

    return load_pipeline(pipeline_path("demo"),
                         [f"input={urls}", f"output={run_dir}", f"stages.1.config.pretrained={checkpoint}",
                          *overrides])


def run_curation(p: Any, progress: Any) -> dict[str, Any]:
    """Run (or resume) the demo pipeline with the shared progress display."""
    from curation.runner.executor import run_pipeline

    return run_pipeline(p, progress=progress)


def write_caption_bank(out: str) -> str:
    """The synthetic corpus's vocabulary as a text file: the caption stage's retrieval bank
    (production code never imports ``curation.synth``; the demo passes the bank in)."""
    from curation.synth import caption_bank

    path = os.path.join(out, "caption_bank.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(caption_bank()) + "\n")
    return path


def run_continual(run_dir: str, corpus: str, checkpoint: str, steps: int, seed: int) -> dict[str, Any]:
    """A short continual run over the curated output's time slices (warm start: the filter CLIP)."""
    from curation.io import Dataset
    from curation.io.query import query
    from curation.train.config import RunConfig
    from curation.train.run import run_continual as run

    curated = os.path.join(run_dir, "curated")
    if "slice" not in Dataset(curated).columns:  # nothing kept: an empty output has only the base columns
        console.print("skipping the continual run: curation kept no samples")
        return {}
    counts = query(curated, "SELECT slice, count(*) AS n FROM samples GROUP BY slice").to_pylist()
    smallest = min((r["n"] for r in counts), default=0) if len(counts) == 3 else 0
    if smallest < 2:  # a weak filter CLIP (e.g. a quick --seed-steps) can keep too little to train on
        console.print(f"skipping the continual run: the curated output has {smallest} samples in its smallest slice")
        return {}
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


class _Worker(threading.Thread):
    """A thread that keeps its target's result or exception for :meth:`result`."""

    def __init__(self, target: Any, *args: Any):
        super().__init__(daemon=True, name="filter-clip")
        self._fn, self._args, self._out, self._err = target, args, None, None
        self.seconds = 0.0

    def run(self) -> None:
        t = time.perf_counter()
        try:
            self._out = self._fn(*self._args)
        except BaseException as e:  # re-raised in the caller's thread by result()
            self._err = e
        self.seconds = time.perf_counter() - t

    def result(self) -> Any:
        self.join()
        if self._err is not None:
            raise self._err
        return self._out


def demo(out: str = typer.Option("out/demo", "--out", help="where everything is written"),
         samples: int = typer.Option(2000, "--samples", help="corpus size (records)"),
         seed: int = typer.Option(0, "--seed"),
         seed_pairs: int = typer.Option(10000, help="clean seed pairs the filter CLIP trains on"),
         seed_steps: int = typer.Option(1500, help="training steps of the filter CLIP (batch 256); fewer "
                                        "for a quick look (the scorecard's quality needs the default)"),
         train_steps: int = typer.Option(20, help="steps per slice of the continual run"),
         fresh: bool = typer.Option(True, help="start from scratch (else resume what is there)"),
         cache: bool = typer.Option(True, help="reuse a filter CLIP trained before from the same seed pairs, "
                                    "recipe and code (--no-cache retrains it)"),
         as_json: Optional[str] = typer.Option(None, "--json", help="also write the summary as JSON here")) -> None:
    """Run the embedded demo end to end (DESIGN.md section 7) and print what curation removed."""
    from curation.blocklist.demo import demo_blocklist
    from curation.classify.demo import safety_demo
    from curation.report import build_report
    from curation.runner.progress import StageProgress
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

    checkpoint = os.path.join(out, "seed_clip")
    trainer = None
    if not os.path.exists(os.path.join(checkpoint, "config.json")):
        _step("training the small filter CLIP on the clean seed set (the download runs meanwhile)")
        trainer = _Worker(filter_clip, corpus, checkpoint, seed_steps, seed, cache)
        trainer.start()

    with SynthServer(corpus) as server:
        console.print(f"serving the corpus at {server.base_url} (loopback only)")
        urls = write_url_list_with_slices(corpus, server.base_url, os.path.join(out, "urls.parquet"))
        blocklist = demo_blocklist(corpus, os.path.join(out, "blocklist.csv"))  # H7: hash-list blocking
        overrides = [f"stages.3.config.bank={write_caption_bank(out)}",
                     f"stages.0.config.blocklists=[{blocklist.path}]"]
        p = demo_pipeline(urls, run_dir, checkpoint, overrides)
        t = _step("curating: download -> score -> dedup -> caption -> filter -> reshard")
        with StageProgress() as bars:
            import dataclasses

            if trainer is not None:
                run_curation(dataclasses.replace(p, stages=p.stages[:1]), bars)
                timings["download"] = time.perf_counter() - t
                source = trainer.result()
                timings["seed_clip"] = trainer.seconds
                console.print(f"filter CLIP: {'trained' if source == 'trained' else 'from the cache'} "
                              f"in {trainer.seconds:.1f}s")
            t_rest = time.perf_counter()
            run_curation(dataclasses.replace(p, stages=p.stages[:2]), bars)  # download + score
            threshold, n_scores = scored_threshold(run_dir)
            how = (f"the split of {n_scores} raw-caption CLIP scores (Otsu)" if n_scores >= MIN_SCORES_TO_SPLIT
                   else f"the pipeline's (only {n_scores} scores to split)")
            console.print(f"mismatch threshold {threshold:.3f}: {how}")
            p = demo_pipeline(urls, run_dir, checkpoint, [*overrides, f"stages.3.config.threshold={threshold}",
                                                          f"stages.4.config.clip_threshold={threshold}"])
            record = run_curation(p, bars)
            timings["pipeline_after_model"] = time.perf_counter() - t_rest
        timings["pipeline"] = time.perf_counter() - t

    t = _step("safety signals: hash-list blocking and a watermark head (train-head + classify)")
    safety, safety_lines = safety_demo(run_dir, corpus, blocklist, os.path.join(out, "safety"))
    timings["safety"] = time.perf_counter() - t

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
    ev = evaluate(run_dir, corpus, threshold=threshold)
    print_summary(ev)
    for line in safety_lines:
        console.print(line)
    if train:
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
    console.print(f"demo done in {timings['total']:.0f} s")
    if as_json:
        with open(as_json, "w") as f:
            json.dump({"evaluation": ev, "threshold": threshold, "timings": timings, "continual": _jsonable(train),
                       "safety": safety}, f, indent=1, default=str)


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x, default=str)
        return x
    except (TypeError, ValueError):
        return str(x)
