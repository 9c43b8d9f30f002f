"""Dedup benchmark: SemDeDup on 1M x 512 embeddings, exact + pHash on 100k samples.

    python bench/bench_dedup.py [--n 1000000] [--dim 512] [--cluster-size 1000] [--samples 100000]

Prints the semantic breakdown (k-means fit, assignment, pairwise), a linearity check at fixed
cluster size (N/4, N/2, N), and speedups against naive baselines measured in the same run:
SemDeDup vs the reference (flat k-means + full pairwise matrix per cluster) on a subset, and
multi-index hashing vs brute-force Hamming on a subset.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CURATION_RAY_OBJECT_STORE_BYTES", str(3 << 30))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from curation.dedup import mih, semantic  # noqa: E402


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n points around n/50 centres with 5% exact-ish duplicates (realistic redundancy)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), d), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), n)]
    x += 0.3 * rng.standard_normal((n, d), dtype=np.float32)
    dup = rng.choice(n, n // 20, replace=False)
    x[dup] = x[rng.integers(0, n, len(dup))] + 0.001 * rng.standard_normal((len(dup), d), dtype=np.float32)
    return x


def run_semantic(x: np.ndarray, cluster_size: int, use_ray: bool = True) -> tuple[float, semantic.SemDedupResult]:
    from curation.cluster import map_tasks

    t = time.perf_counter()
    r = semantic.semdedup(x, eps=0.05, n_clusters=math.ceil(len(x) / cluster_size), niter=10,
                          sample_size=50_000, map=map_tasks if use_ray else None,
                          n_tasks=4 * (os.cpu_count() or 1))
    return time.perf_counter() - t, r


def naive_semantic(x: np.ndarray, k: int) -> float:
    """The straightforward pipeline: flat spherical k-means, full pairwise matrix per cluster."""
    t = time.perf_counter()
    xn = semantic.l2_normalize(x)
    labels, sims = semantic.spherical_kmeans(xn, k, niter=10, mode="flat")
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(-(1 - sims[idx]), kind="stable")]
        s = xn[idx] @ xn[idx].T
        np.fill_diagonal(s, 0)
        _ = np.triu(s, 1).max(0) > 0.95
    return time.perf_counter() - t


def bench_semantic(n: int, d: int, cluster_size: int) -> None:
    from curation.cluster import ensure_ray

    ensure_ray()
    print(f"== semantic dedup (SemDeDup), d={d}, cluster size {cluster_size}")
    for m in (n // 4, n // 2, n):
        x = clustered(m, d, seed=m)
        secs, r = run_semantic(x, cluster_size)
        del x
        tm = r.timings
        print(f"N={m:>9,}: {secs:6.1f} s end to end ({m / secs:,.0f} emb/s) | k-means fit {tm['kmeans_fit_s']:.1f} s, "
              f"assignment {tm['assign_s']:.1f} s, order {tm['order_s']:.1f} s, pairwise {tm['pairwise_s']:.1f} s | "
              f"{r.n_clusters} clusters, removed {int(r.removed.sum()):,} | {secs / m * 1e6:.2f} us/emb")
    sub = min(n, 50_000)
    x = clustered(sub, d, seed=1)
    base = naive_semantic(x, math.ceil(sub / cluster_size))
    ours, _ = run_semantic(x, cluster_size)
    print(f"subset N={sub:,}: naive reference {base:.1f} s vs ours {ours:.1f} s -> speedup x{base / ours:.2f}")


def make_image_dataset(root: str, samples: int) -> Any:
    """samples rows from samples//20 distinct scenes: ~1/3 exact copies, ~1/3 re-encodings."""
    import hashlib
    import io

    from PIL import Image

    from curation.io.writer import DatasetWriter

    rng = np.random.default_rng(0)
    base_n = max(10, samples // 3)
    bases = []
    for _ in range(base_n):
        arr = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((64, 64), Image.Resampling.BILINEAR)
        b = io.BytesIO()
        im.save(b, "JPEG", quality=90)
        bases.append((im, b.getvalue()))
    w = DatasetWriter(root, stage="bench", config={"samples": samples})
    per_shard, ids = 5000, []
    for sid, start in enumerate(range(0, samples, per_shard)):
        with w.shard(sid) as sw:
            for i in range(start, min(samples, start + per_shard)):
                im, data = bases[i % base_n]
                if i >= 2 * base_n:  # a re-encoding at another quality
                    b = io.BytesIO()
                    im.save(b, "JPEG", quality=60 + i % 30)
                    data = b.getvalue()
                row = {"uid": f"b{i:08d}", "status": "success", "sha256": hashlib.sha256(data).hexdigest()}
                sw.add(row, data, "jpg")
        ids.append(sid)
    return w.commit(ids)


def bench_exact_phash(samples: int) -> None:
    from curation.cluster import ensure_ray, map_tasks
    from curation.dedup.config import DedupConfig
    from curation.dedup.reference import find_duplicates_reference

    ensure_ray()
    print(f"== exact + pHash over {samples:,} samples (64x64 JPEG)")
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_image_dataset(os.path.join(tmp, "ds"), samples)
        t = time.perf_counter()
        r = find_duplicates_reference(ds, DedupConfig.model_validate({"methods": ["exact", "phash"]}), map=map_tasks)
        secs = time.perf_counter() - t
        print(f"{samples / secs:,.0f} samples/s end to end ({secs:.1f} s; timings {r.stats['timings_s']}; "
              f"removed {r.stats['removed']})")
        codes = np.array([int(h, 16) for h in r.phash or [] if h], dtype=np.uint64)
    sub = codes[:20_000]
    t = time.perf_counter()
    a = mih.brute_force_pairs(sub, 4)
    brute = time.perf_counter() - t
    t = time.perf_counter()
    b = mih.near_pairs(sub, 4)
    fast = time.perf_counter() - t
    assert a.tolist() == b.tolist()
    print(f"pHash search on {len(sub):,} codes: brute force {brute:.2f} s vs multi-index hashing {fast:.3f} s "
          f"-> speedup x{brute / fast:.1f} (same pairs: {len(a):,})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--cluster-size", type=int, default=500)
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--skip-semantic", action="store_true")
    p.add_argument("--skip-phash", action="store_true")
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs (shared; figures are noisy)")
    if not a.skip_semantic:
        bench_semantic(a.n, a.dim, a.cluster_size)
    if not a.skip_phash:
        bench_exact_phash(a.samples)


if __name__ == "__main__":
    main()
