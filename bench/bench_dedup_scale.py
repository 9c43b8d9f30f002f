"""Distributed dedup at size: driver peak RSS and seconds, metadata-only synthetic datasets.

usage: python bench/bench_dedup_scale.py [--sizes 100000,1000000] [--methods exact,phash] [--dim 0|512]
                                         [--flat 0.05] [--reference] [--root /tmp/bench_dedup]

Each dataset holds stored sha256 and pHash columns (5 % exact copies, 5 % near copies 1-3
bits away) and, with ``--dim``, clustered unit embeddings (1000 centres, 5 % near copies),
written directly (no tars), so the numbers are the dedup decision and write-out alone.
``--flat F`` makes a fraction F of the rows "flat images": distinct bytes (sha256) whose
pHash is one of three codes (0, all ones, one mid-grey-like value), as real crawls have.
The table gives the pHash candidate pairs (code pairs whose Hamming distance was computed).
Every measurement runs in a fresh process: ``peak_rss_mb`` is that driver's
``VmHWM`` (Ray workers are other processes). ``--reference`` also runs the
single-process implementation for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(path: str, n: int, dim: int, per_shard: int = 10_000, seed: int = 0, flat: float = 0.0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, ROOT)
    from tests.dedup.corpus import meta_only

    if os.path.exists(os.path.join(path, "manifest.v1.json")):
        return
    rng = np.random.default_rng(seed)
    n_exact, n_near = n // 20, n // 20
    base = n - n_exact - n_near
    codes = rng.integers(0, 2**63, base, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    shas = [rng.bytes(32).hex() for _ in range(base)]  # uniform like real sha256 (spread over partitions)
    src_e = rng.integers(0, base, n_exact)
    src_n = rng.integers(0, base, n_near)
    flips = np.zeros(n_near, dtype=np.uint64)
    for _ in range(3):
        flips |= np.uint64(1) << rng.integers(0, 64, n_near).astype(np.uint64)
    if flat:  # flat images: base rows (unique bytes) whose pHash is one of three codes
        rows = rng.choice(base, int(flat * n), replace=False)
        flat_codes = np.array([0, 2**64 - 1, 0x8000_0000_0000_0000], dtype=np.uint64)
        codes[rows] = flat_codes[rng.integers(0, 3, len(rows))]
    all_codes = np.concatenate([codes, codes[src_e], codes[src_n] ^ flips])
    all_sha = shas + [shas[i] for i in src_e] + [rng.bytes(32).hex() for _ in range(n_near)]
    order = rng.permutation(n)
    uids = [f"s{i:09d}" for i in range(n)]
    emb = None
    if dim:
        centres = rng.normal(size=(1000, dim)).astype(np.float32)
        x = centres[rng.integers(0, 1000, base)] + 0.6 * rng.normal(size=(base, dim)).astype(np.float32)
        near = x[src_n] + 0.01 * rng.normal(size=(n_near, dim)).astype(np.float32)
        emb = np.concatenate([x, x[src_e], near])[order]
        del x, near
    meta_only(path, uids=uids, sha256=[all_sha[i] for i in order], phash=[f"{all_codes[i]:016x}" for i in order],
              clip_score=np.round(rng.random(n), 3), emb=None, per_shard=per_shard)
    if emb is not None:  # image_emb only, shard by shard (the dataset reads just uid + image_emb)
        os.makedirs(os.path.join(path, "emb", "v1"), exist_ok=True)
        for sid, a in enumerate(range(0, n, per_shard)):
            b = min(n, a + per_shard)
            arr = pa.FixedSizeListArray.from_arrays(pa.array(emb[a:b].ravel()), dim)
            pq.write_table(pa.table({"uid": uids[a:b], "image_emb": arr}),
                           os.path.join(path, "emb", "v1", f"{sid:06d}.parquet"))
        m = json.load(open(os.path.join(path, "manifest.json")))
        m["embeddings"] = {"version": 1, "dim": dim, "model": "synthetic"}
        json.dump(m, open(os.path.join(path, "manifest.json"), "w"))
    shutil.copy(os.path.join(path, "manifest.json"), os.path.join(path, "manifest.v1.json"))


def reset(path: str) -> None:
    for d in os.listdir(os.path.join(path, "meta")):
        if d != "v1":
            shutil.rmtree(os.path.join(path, "meta", d))
    shutil.copy(os.path.join(path, "manifest.v1.json"), os.path.join(path, "manifest.json"))


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry a parent's peak over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(path: str, methods: list[str], reference: bool) -> dict:
    """In this (fresh) process: one dedup run; returns seconds, driver peak RSS, stats."""
    sys.path.insert(0, ROOT)
    from curation.cluster import ensure_ray, map_tasks
    from curation.dedup.config import DedupConfig
    from curation.io import Dataset

    ensure_ray()
    ds = Dataset(path)
    rss0 = _hwm_mb()
    t = time.perf_counter()
    if reference:
        from curation.dedup.reference import find_duplicates_reference

        r = find_duplicates_reference(ds, DedupConfig.model_validate({"methods": methods}), map=map_tasks)
        stats = r.stats
    else:
        from curation.dedup.stage import DedupStage
        from curation.stage import StageContext

        ctx = StageContext(output=path, executor="ray")
        DedupStage({"methods": methods})(ds, ctx)
        assert ctx.stats is not None
        stats = ctx.stats.to_dict()
    secs = time.perf_counter() - t
    return {"seconds": round(secs, 1), "peak_rss_mb": round(_hwm_mb()),
            "rss_before_mb": round(rss0), "stats": stats.get("dedup", stats)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--methods", default="exact,phash")
    ap.add_argument("--dim", type=int, default=0)
    ap.add_argument("--flat", type=float, default=0.0, help="fraction of rows with one of 3 flat-image pHashes")
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--root", default="/tmp/bench_dedup2")  # 2: sha256 values changed (uniform now)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--ref-run", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    methods = a.methods.split(",")
    if a.run:
        print(json.dumps(run_one(a.run, methods, a.ref_run)))
        return
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        path = os.path.join(a.root, f"n{n}-d{a.dim}" + (f"-f{a.flat:g}" if a.flat else ""))
        t = time.perf_counter()
        make(path, n, a.dim, flat=a.flat)
        print(f"dataset {path}: {time.perf_counter() - t:.0f}s", file=sys.stderr)
        for ref in ([False, True] if a.reference else [False]):
            reset(path)
            cmd = [sys.executable, __file__, "--run", path, "--methods", a.methods] + (["--ref-run"] if ref else [])
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if p.returncode:
                print(p.stderr[-3000:], file=sys.stderr)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r.update(rows=n, impl="reference" if ref else "distributed", methods=a.methods, flat=a.flat,
                     load=" ".join(f"{v:.1f}" for v in os.getloadavg()))
            rows.append(r)
            print(json.dumps(r), flush=True)
        reset(path)
    print("| impl | methods | rows | flat | seconds | pHash s | pHash candidates | driver peak RSS (MB) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["stats"]
        cand = st.get("phash_candidates", "-")
        ph = st.get("timings_s", {}).get("phash", st.get("timings_s", {}).get("phash_search", "-"))
        print(f"| {r['impl']} | {r['methods']} | {r['rows']:,} | {r['flat']:g} | {r['seconds']} | {ph} | "
              f"{cand:,} | {r['peak_rss_mb']} | {r['load']} |" if isinstance(cand, int) else
              f"| {r['impl']} | {r['methods']} | {r['rows']:,} | {r['flat']:g} | {r['seconds']} | {ph} | {cand} | "
              f"{r['peak_rss_mb']} | {r['load']} |")


if __name__ == "__main__":
    main()
