"""Continual-learning experiment: forgetting of slice 1 under sequential / replay-all / Mod-X.

On the synthetic 3-slice corpus (``curation.synth.generate``) with ``curation-tiny`` on CPU.
The baseline (sequential fine-tuning) is measured in the same run; each variant prints its
train x eval matrix and its mean forgetting relative to the baseline's.

    python bench/bench_continual.py --steps 60 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

VARIANTS = {
    "sequential": {"replay": {"policy": "none"}},
    "replay-all": {"replay": {"policy": "all"}},
    "mod-x": {"replay": {"policy": "none"}, "loss": {"modx_alpha": 1.0}},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--metric", default="i2t_r1")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    torch.set_num_threads(2)
    from curation.synth import generate
    from curation.train.config import RunConfig
    from curation.train.metrics import format_matrix
    from curation.train.run import run_continual

    work = tempfile.mkdtemp(prefix="bench_continual_")
    corpus = os.path.join(work, "synth")
    generate(corpus, samples=60, seed=0, seed_samples=1500, eval_per_slice=150)
    seed_pq, eval_pq = os.path.join(corpus, "seed.parquet"), os.path.join(corpus, "eval.parquet")
    import duckdb

    names = [r[0] for r in duckdb.sql(f"SELECT DISTINCT slice FROM '{seed_pq}' ORDER BY 1").fetchall()]
    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        for variant, extra in VARIANTS.items():
            out = os.path.join(work, f"{variant}-{seed}")
            spec = {"out": out, "eval_dataset": eval_pq, "steps_per_slice": args.steps, "batch_size": args.batch,
                    "warmup_steps": 5, "checkpoint_every": 10 ** 6, "seed": seed,
                    "slices": [{"name": n, "dataset": seed_pq, "where": f"slice = '{n}'"} for n in names], **extra}
            summary = run_continual(RunConfig.parse(spec, where=variant))
            rows = json.load(open(os.path.join(out, "eval_rows.json")))
            print(f"\n== {variant} (seed {seed}) ==\n{format_matrix(rows, names, args.metric)}")
            s = summary[args.metric]
            print(f"forgetting per slice {[round(f, 3) for f in s['forgetting']]}  mean {s['mean_forgetting']:.3f}  "
                  f"BWT {s['backward_transfer']:.3f}  FWT {s['forward_transfer']:.3f}  final mean {s['final_mean']:.3f}")
            results.setdefault(variant, []).append(s["forgetting"][0])
    base = sum(results["sequential"]) / len(results["sequential"])
    print(f"\nforgetting of slice {names[0]} ({args.metric}), seeds {args.seeds}:")
    for variant, vals in results.items():
        mean = sum(vals) / len(vals)
        ratio = mean / base if base else float("nan")
        print(f"  {variant:<12} {mean:.3f}  (x{ratio:.2f} of sequential)  per seed {[round(v, 3) for v in vals]}")


if __name__ == "__main__":
    main()
