"""Continual-learning experiment: forgetting of slice 1 under sequential / replay-all / Mod-X.

On the synthetic 3-slice corpus (``curation.synth.generate``) with ``curation-tiny`` (32 px)
on CPU. ``seed.parquet`` and ``eval.parquet`` are imported as curated datasets (the project
format, with ``slice`` and ``class_label`` metadata), so every training batch is streamed
through ``curation.stream.StreamingDataset`` like pipeline output, and replay is a
``StreamingDataset.mix`` of the current slice and earlier slices.

Drift (``--drift``):

- ``corpus``: slice ``k`` is the corpus's time slice ``k`` as generated (frequencies drift,
  purple/pink and stars/hexagons appear in 2024, cyan/crosses in 2025; most concepts are
  shared by all slices).
- ``disjoint`` (default): TiC-style shift with disjoint concept vocabularies: slice ``k`` is
  time slice ``k`` restricted, with ``where`` over ``class_label``, to its own colours
  (2023: red green blue; 2024: yellow orange purple pink; 2025: black white cyan). Every
  slice is evaluated on the held-out samples of the same subset.

Each variant trains the same slices from the same random init (per seed); the sequential
baseline is measured in the same run. Prints, per variant and seed, the train-slice x
eval-slice matrices (i2t R@1 and zero-shot accuracy) and the forgetting per slice
(max earlier - final), then mean and std across seeds.

    python bench/bench_continual.py --steps 60 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time

import torch

VARIANTS = {
    "sequential": {"replay": {"policy": "none"}},
    "replay-all": {"replay": {"policy": "all"}},
    "mod-x": {"replay": {"policy": "none"}, "loss": {"modx_alpha": 1.0}},
}
SLICE_COLOURS = {"2023": ["red", "green", "blue"], "2024": ["yellow", "orange", "purple", "pink"],
                 "2025": ["black", "white", "cyan"]}
METRICS = ("i2t_r1", "zeroshot_acc")


def slice_where(name: str, drift: str) -> str:
    where = f"slice = '{name}'"
    if drift == "disjoint":
        colours = ", ".join(f"'{c}'" for c in SLICE_COLOURS[name])
        where += f" AND split_part(class_label, ' ', 1) IN ({colours})"
    return where


def _fmt(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="steps per slice")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--drift", choices=["disjoint", "corpus"], default="disjoint")
    ap.add_argument("--seed-samples", type=int, default=4500, help="clean training pairs (all slices)")
    ap.add_argument("--eval-per-slice", type=int, default=500)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    torch.set_num_threads(args.threads)
    import pyarrow.parquet as pq

    from curation.synth import generate
    from curation.train.config import RunConfig
    from curation.train.data import write_pairs_dataset
    from curation.train.metrics import format_matrix
    from curation.train.run import run_continual

    t0 = time.perf_counter()
    work = args.work or tempfile.mkdtemp(prefix="bench_continual_")
    corpus = os.path.join(work, "synth")
    generate(corpus, samples=60, seed=0, seed_samples=args.seed_samples, eval_per_slice=args.eval_per_slice)
    datasets = {}
    for part in ("seed", "eval"):
        table = pq.read_table(os.path.join(corpus, f"{part}.parquet"))
        table = table.append_column("uid", [[f"{part}-{i:06d}" for i in range(table.num_rows)]])
        datasets[part] = write_pairs_dataset(table, os.path.join(work, f"{part}-ds"), samples_per_shard=500,
                                             columns=["slice", "class_label"]).url
    names = ["2023", "2024", "2025"]
    print(f"corpus: synth seed 0, {args.seed_samples} train pairs, {args.eval_per_slice} eval pairs per slice; "
          f"drift {args.drift}; curation-tiny, {args.steps} steps/slice, batch {args.batch}, lr {args.lr}, "
          f"{args.threads} threads; prepared in {time.perf_counter() - t0:.0f} s")
    forg: dict[tuple[str, str], list[list[float]]] = {}
    for seed in args.seeds:
        for variant in args.variants:
            t = time.perf_counter()
            out = os.path.join(work, f"{variant}-{seed}")
            spec = {"out": out, "steps_per_slice": args.steps, "batch_size": args.batch, "lr": args.lr,
                    "warmup_steps": 5, "checkpoint_every": 10 ** 6, "seed": seed,
                    "slices": [{"name": n, "dataset": datasets["seed"], "where": slice_where(n, args.drift),
                                "eval_dataset": datasets["eval"]} for n in names], **VARIANTS[variant]}
            summary = run_continual(RunConfig.parse(spec, where=variant))
            rows = json.load(open(os.path.join(out, "eval_rows.json")))
            print(f"\n== {variant} (seed {seed}, {time.perf_counter() - t:.0f} s) ==")
            for metric in METRICS:
                s = summary[metric]
                print(format_matrix(rows, names, metric))
                print(f"  forgetting per slice {[round(f, 3) for f in s['forgetting']]}"
                      f"  mean {s['mean_forgetting']:.3f}"
                      f"  BWT {s['backward_transfer']:.3f}  final mean {s['final_mean']:.3f}")
                forg.setdefault((variant, metric), []).append(s["forgetting"])
    print(f"\nforgetting (max earlier - final), mean ± std over seeds {args.seeds}; drift {args.drift}; "
          f"total {time.perf_counter() - t0:.0f} s")
    for metric in METRICS:
        print(f"  {metric}:")
        for variant in args.variants:
            per = forg[(variant, metric)]
            s1 = [f[0] for f in per]
            mean_all = [sum(f) / len(f) for f in per]
            print(f"    {variant:<11} slice {names[0]}: {_fmt(s1)}  (per seed {[round(v, 3) for v in s1]})"
                  f"   mean over slices 1-2: {_fmt(mean_all)}")


if __name__ == "__main__":
    main()
