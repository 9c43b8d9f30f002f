"""Scale: per-stage seconds per million rows and peak memory of the driver and of every worker.

Writes N tiny unique JPEGs with captions (plus ``--dup-fraction`` exact duplicates) as
WebDataset tars, then runs the pipeline one stage per fresh Python process, each starting its
own embedded Ray (so one stage's memory never hides in the next one's figures):

    ingest (download --input-format webdataset) -> score (curation-tiny) -> dedup
    (exact + phash + semantic) -> filter (clip_top_fraction) -> reshard -> StreamingDataset
    index with a ``where``

For each stage it reports the stage's own seconds (Ray start-up excluded), seconds per
million rows, the driver's peak RSS (its ``VmHWM``: the kernel's high-water mark, exact) and
the largest peak RSS of any Ray worker and of Ray's own processes (raylet, GCS), sampled from
``/proc`` over the driver's process tree every ``--sample`` seconds (Linux). Prints one table and a JSON
line; ``--json`` also writes it to a file.

    python bench/bench_scale.py --rows 250000 [--work DIR] [--stages ingest,score,...] [--keep]

Compare sizes with ``--rows 250000`` / ``1000000`` / ``4000000`` (``bench/RESULTS.md`` "Scale").
``--stages ingest-commit --work DIR`` (after a kept ingest there) measures the ingest driver's
per-row side alone: the finished ingest is resumed with its manifest removed (no fetching).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

STAGES = ("ingest", "score", "dedup", "filter", "reshard", "stream")
PER_TAR = 10_000
TOP_FRACTION = 0.3
STREAM_WHERE = "keep AND clip_score IS NOT NULL"
# The random-weight tiny model maps noise images close together (median nearest-neighbour
# 1 - cos ~ 0.006 among 2,000): at SemDeDup's default eps 0.05 nearly every row would be a
# "semantic duplicate" and reshard would have nothing to write. The work is the same.
SEMANTIC_EPS = 1e-4


# -- input -------------------------------------------------------------------------------
def _tar(args: tuple[str, int, int, int, float]) -> int:
    """One input tar: samples ``[start, stop)``; every ``1/dup`` th sample repeats an earlier
    sample's image bytes (an exact duplicate with its own caption and uid)."""
    import numpy as np
    from PIL import Image

    path, tar_id, start, stop, dup = args
    every = int(round(1 / dup)) if dup > 0 else 0
    cache: dict[int, bytes] = {}
    with tarfile.open(path + ".tmp", "w") as tf:
        for i in range(start, stop):
            src = i - 7 if every and i % every == every - 1 and i - 7 >= start else i
            if src not in cache:
                rng = np.random.default_rng(src)
                px = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # random blocks: unique pHashes
                b = io.BytesIO()
                Image.fromarray(px).resize((32, 32), Image.Resampling.NEAREST).save(b, "JPEG", quality=80)
                cache[src] = b.getvalue()
            img = cache[src]
            key = f"{i:010d}"
            meta = json.dumps({"uid": f"u{i:010d}", "url": f"http://example.invalid/{i}.jpg"}).encode()
            for ext, data in (("jpg", img), ("txt", f"a photo of item {i} number {i % 977}".encode()), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            if len(cache) > 64:
                cache.pop(next(iter(cache)))
    os.replace(path + ".tmp", path)
    return stop - start


def write_input(folder: str, rows: int, dup: float, procs: int) -> float:
    os.makedirs(folder, exist_ok=True)
    jobs = [(os.path.join(folder, f"{t:05d}.tar"), t, s, min(rows, s + PER_TAR), dup)
            for t, s in enumerate(range(0, rows, PER_TAR))]
    todo = [j for j in jobs if not os.path.exists(j[0])]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(procs) as ex:
        list(ex.map(_tar, todo))
    return time.perf_counter() - t0


# -- --prepared: a scored dataset written directly (no ingest, no model) --------------------------
def _prepared_shard(args: tuple[str, int, int, int, float, int]) -> int:
    """Shard ``sid`` of a dataset as ingest + score would leave it: tiny unique JPEGs (exact
    duplicates as in the tars), pHash/sha256 columns, random ``clip_score`` and unit embeddings."""
    import hashlib

    import numpy as np
    from PIL import Image

    from curation.dedup.phash import phash_bytes, to_hex
    from curation.io import DatasetWriter

    root, sid, start, stop, dup, dim = args
    every = int(round(1 / dup)) if dup > 0 else 0
    w = DatasetWriter.attach(root)
    with w.shard(sid) as sw:
        for i in range(start, stop):
            src = i - 7 if every and i % every == every - 1 and i - 7 >= start else i
            px = np.random.default_rng(src).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            b = io.BytesIO()
            Image.fromarray(px).resize((32, 32), Image.Resampling.NEAREST).save(b, "JPEG", quality=80)
            img = b.getvalue()
            sw.add({"uid": f"u{i:010d}", "url": f"http://example.invalid/{i}.jpg",
                    "caption": f"a photo of item {i} number {i % 977}", "status": "success",
                    "width": 32, "height": 32, "original_width": 32, "original_height": 32,
                    "sha256": hashlib.sha256(img).hexdigest(), "phash": to_hex(phash_bytes(img))}, img, "jpg")
    return sid


def _prepared_score(args: tuple[str, int, str, int, int]) -> int:
    """Score version of shard ``sid`` as the score stage leaves it: random ``clip_score`` and unit
    embeddings (seeded by the shard), written by this worker into the driver's version."""
    import numpy as np
    import pyarrow as pa

    from curation.io import Dataset
    from curation.io.writer import VersionWriter
    from curation.score.assemble import fixed_list

    root, version, run_id, sid, dim = args
    ds = Dataset(root)
    vw = VersionWriter.attach(ds, version, run_id)
    meta = ds.read_meta(sid)
    n = meta.num_rows
    rng = np.random.default_rng(10_000 + sid)
    v = rng.normal(size=(2, n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    meta = (meta.append_column("clip_score", pa.array(rng.normal(0.25, 0.05, n).astype(np.float32)))
            .append_column("clip_model", pa.array(["prepared"] * n))
            .append_column("score_error", pa.nulls(n, pa.string())))
    vw.write_embeddings(sid, pa.table({"uid": meta.column("uid"), "image_emb": fixed_list(list(v[0]), dim),
                                       "text_emb": fixed_list(list(v[1]), dim)}), model="prepared")
    vw.write_meta(sid, meta)
    return sid


PREPARED = "prepared.json"          # in --work: what was prepared (rows, dup fraction, dim)
PREPARED_MANIFEST = "manifest.prepared.json"  # in work/ds: the manifest right after preparation
PREPARED_FORMAT = 1                 # bump when the prepared data's layout or content changes


def write_prepared(work: str, rows: int, dup: float, procs: int, dim: int = 128) -> float:
    """``work/ds``: version 1 as ingest writes it, version 2 as score writes it; both written
    by worker processes. Records itself in ``work/prepared.json`` so a later run can reuse it."""
    from curation.io import DatasetWriter
    from curation.io.writer import VersionWriter

    t0 = time.perf_counter()
    root = os.path.join(work, "ds")
    if os.path.exists(root):
        shutil.rmtree(root)  # an unfinished or different preparation
    w = DatasetWriter(root, stage="download", config={"bench": "prepared", "rows": rows})
    jobs = [(root, t, s, min(rows, s + PER_TAR), dup, dim) for t, s in enumerate(range(0, rows, PER_TAR))]
    with ProcessPoolExecutor(procs) as ex:
        ids = list(ex.map(_prepared_shard, jobs))
        ds = w.commit(ids)
        vw = VersionWriter(ds, "score", {"bench": "prepared"})
        list(ex.map(_prepared_score, [(root, vw.version, vw.run_id, sid, dim) for sid in ds.shard_ids]))
    vw.commit(embeddings={"version": vw.version, "dim": dim, "model": "prepared"})
    shutil.copy(os.path.join(root, "manifest.json"), os.path.join(root, PREPARED_MANIFEST))
    seconds = time.perf_counter() - t0
    info = {"format": PREPARED_FORMAT, "rows": rows, "dup_fraction": dup, "dim": dim, "per_tar": PER_TAR,
            "seconds": round(seconds, 1), "disk_gb": round(_du(root) / 1e9, 2)}
    with open(os.path.join(work, PREPARED), "w") as f:
        json.dump(info, f)
    return seconds


def prepared_info(work: str) -> dict | None:
    try:
        with open(os.path.join(work, PREPARED)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def reset_prepared(work: str) -> None:
    """Put ``work/ds`` back to the state preparation left (drop the versions, tars and output
    of earlier measured runs), so every run measures the same work."""
    root = os.path.join(work, "ds")
    with open(os.path.join(root, PREPARED_MANIFEST)) as f:
        m = json.load(f)
    keep = {int(h["version"]) for h in m["history"]}
    for sub in ("meta", "emb"):
        d = os.path.join(root, sub)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if not (name.startswith("v") and name[1:].isdigit() and int(name[1:]) in keep):
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)
    tars = {os.path.basename(s["tar"]) for s in m["shards"]}
    for name in os.listdir(os.path.join(root, "shards")):
        if name not in tars:
            os.remove(os.path.join(root, "shards", name))
    for name in ("_lease.json",):  # a killed run's lease would otherwise hold the dataset for its TTL
        if os.path.exists(os.path.join(root, name)):
            os.remove(os.path.join(root, name))
    shutil.copy(os.path.join(root, PREPARED_MANIFEST), os.path.join(root, ".manifest.reset.tmp"))
    os.replace(os.path.join(root, ".manifest.reset.tmp"), os.path.join(root, "manifest.json"))
    shutil.rmtree(os.path.join(work, "curated"), ignore_errors=True)


def _du(path: str) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


# -- one stage, in a fresh process ------------------------------------------------------------
def run_stage(name: str, work: str, cpus: int) -> dict:
    """Run one stage in this process (the driver being measured); return its figures."""
    from curation.cluster import ensure_ray
    from curation.io import Dataset
    from curation.stage import StageContext

    ensure_ray(num_cpus=cpus)
    ds_url, curated = os.path.join(work, "ds"), os.path.join(work, "curated")
    t0 = time.perf_counter()
    extra: dict = {}
    if name == "ingest":
        from curation.download.stage import DownloadStage

        out = DownloadStage({"input": os.path.join(work, "input"), "input_format": "webdataset",
                             "resize_mode": "no", "processes_count": cpus, "samples_per_shard": PER_TAR})(
            None, StageContext(output=ds_url))
        rows = out.num_samples
    elif name == "stream":
        from curation.stream import StreamingDataset

        sd = StreamingDataset(ds_url, where=STREAM_WHERE, batch_size=256, rank=0, world_size=1)
        rows, extra = Dataset(ds_url).num_samples, {"selected": len(sd)}
    else:
        stage = _stage(name, curated)
        ctx = StageContext(output=curated if name == "reshard" else ds_url)
        ds = Dataset(ds_url)
        out = stage(ds, ctx)
        rows = ds.num_samples
        st = ctx.stats.to_dict() if ctx.stats else {}
        extra = {k: st[k] for k in ("samples_out", "executor", "layout") if k in st}
        if name == "filter":
            extra["threshold"] = (st.get("filter") or {}).get("top_fraction_threshold")
    seconds = time.perf_counter() - t0
    return {"stage": name, "rows": rows, "seconds": round(seconds, 2), "driver_hwm_mb": _hwm_mb(os.getpid()), **extra}


def _stage(name: str, curated: str):
    if name == "score":
        from curation.score.stage import ScoreStage

        return ScoreStage({"model": "curation-tiny", "device": "cpu"})
    if name == "dedup":
        from curation.dedup.stage import DedupStage

        return DedupStage({"methods": ["exact", "phash", "semantic"], "eps": SEMANTIC_EPS})
    if name == "filter":
        from curation.filters.stage import FilterStage

        return FilterStage({"clip_top_fraction": TOP_FRACTION})
    if name == "reshard":
        from curation.reshard.stage import ReshardStage

        return ReshardStage({"output": curated})
    raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def uncommit_ingest(work: str) -> None:
    """Put ``work/ds`` back to a finished ingest whose manifest was never written (a ``kill -9``
    after the last shard committed): only the shards, their version-1 metadata and the download
    state stay. Measuring ``ingest`` then measures the driver's per-row side alone (planning,
    the cross-tar uid check, status counts, the manifest) at the real row count, with no fetching:
    stage ``ingest-commit``."""
    ds = os.path.join(work, "ds")
    if not os.path.isdir(os.path.join(ds, "meta", "v1")) or not os.path.exists(os.path.join(ds, "_writing.json")):
        raise SystemExit(f"ingest-commit: {ds} holds no ingest to resume (run the ingest stage with --keep first)")
    keep = {"shards", "meta", "_writing.json", "_download_input.json"}
    for name in os.listdir(ds):
        if name not in keep:
            path = os.path.join(ds, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for name in os.listdir(os.path.join(ds, "meta")):
        if name != "v1":
            shutil.rmtree(os.path.join(ds, "meta", name))
    shutil.rmtree(os.path.join(work, "curated"), ignore_errors=True)


# -- the parent: runs each stage and samples the process tree ----------------------------------------
def measure(name: str, work: str, cpus: int, sample_s: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")}
    res_file = os.path.join(work, f".{name}.json")
    cmd = [sys.executable, __file__, "--run-stage", name, "--work", work, "--cpus", str(cpus), "--result", res_file]
    p = subprocess.Popen(cmd, env=env)
    peak: dict[str, float] = {"driver": 0.0, "worker": 0.0, "ray_system": 0.0}
    worst: dict[str, str] = {}
    free0 = low = shutil.disk_usage(work).free
    load0 = os.getloadavg()[0]
    while p.poll() is None:
        for kind, rss, label in _tree(p.pid):
            if rss > peak[kind]:
                peak[kind], worst[kind] = rss, label
        low = min(low, shutil.disk_usage(work).free)
        time.sleep(sample_s)
    if p.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {p.returncode})")
    with open(res_file) as f:
        res = json.load(f)
    res["driver_peak_mb"] = max(res.get("driver_hwm_mb") or 0, round(peak["driver"], 1))
    res["worker_peak_mb"] = round(peak["worker"], 1)
    res["ray_system_peak_mb"] = round(peak["ray_system"], 1)
    res["worker_peak_is"] = worst.get("worker", "")
    res["disk_peak_gb"] = round((free0 - low) / 1e9, 2)  # filesystem-wide: other writers count too
    res["load_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res["s_per_m_rows"] = round(res["seconds"] / max(res["rows"], 1) * 1e6, 1)
    return res


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root: int) -> list[tuple[str, float, str]]:
    """``(kind, peak RSS MB, label)`` of the driver and each descendant (their VmHWM)."""
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        hwm = _hwm_mb(pid)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
        if hwm is None:
            continue
        if pid == root:
            out.append(("driver", hwm, "driver"))
        elif "ray::" in cmd or "default_worker" in cmd:
            out.append(("worker", hwm, cmd[:60]))
        else:
            out.append(("ray_system", hwm, cmd[:60]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=250_000)
    ap.add_argument("--work", default=None, help="working folder (default: a temp dir, removed unless --keep)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--dup-fraction", type=float, default=0.01)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sample", type=float, default=0.5, help="psutil sampling period (s)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--prepared", action="store_true",
                    help="write the scored dataset directly (random scores/embeddings) instead of running "
                         "ingest + score; only dedup, filter, reshard, stream are then measured")
    ap.add_argument("--dim", type=int, default=128, help="embedding dimension of --prepared data")
    ap.add_argument("--prepare-only", action="store_true",
                    help="with --work: write the --prepared dataset there (or keep a matching one) and stop")
    ap.add_argument("--reuse", action="store_true",
                    help="with --work: measure on the --prepared dataset already there (reset to its "
                         "prepared state first); fail if there is none for these --rows/--dup-fraction/--dim")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--run-stage", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_stage:
        res = run_stage(a.run_stage, a.work, a.cpus)
        with open(a.result, "w") as f:
            json.dump(res, f)
        return
    if (a.prepare_only or a.reuse) and not a.work:
        raise SystemExit("--prepare-only and --reuse need --work DIR (the folder that keeps the prepared data)")
    a.prepared = a.prepared or a.prepare_only or a.reuse
    work = a.work or tempfile.mkdtemp(prefix="bench-scale-")
    try:
        if a.prepared:
            info = prepared_info(work)
            want = {"format": PREPARED_FORMAT, "rows": a.rows, "dup_fraction": a.dup_fraction, "dim": a.dim,
                    "per_tar": PER_TAR}
            if info is not None and all(info.get(k) == v for k, v in want.items()):
                reset_prepared(work)
                print(f"input: {a.rows} rows, prepared data reused from {work} "
                      f"(prepared in {info['seconds']:.0f}s, {info['disk_gb']} GB)", flush=True)
            elif a.reuse:
                raise SystemExit(f"--reuse: {work} holds no prepared data for {want} (it has {info}); "
                                 "run with --prepare-only first")
            else:
                t_in = write_prepared(work, a.rows, a.dup_fraction, a.cpus, a.dim)
                info = prepared_info(work) or {}
                print(f"input: {a.rows} rows ({t_in:.0f}s, prepared, {info.get('disk_gb')} GB)", flush=True)
            if a.prepare_only:
                return
            stages = [s for s in a.stages.split(",") if s not in ("ingest", "score")]
        else:
            t_in = write_input(os.path.join(work, "input"), a.rows, a.dup_fraction, a.cpus)
            stages = a.stages.split(",")
            print(f"input: {a.rows} rows ({t_in:.0f}s)", flush=True)
        load0 = os.getloadavg()[0]
        results = []
        for name in stages:
            if name == "ingest-commit":
                uncommit_ingest(work)
                results.append({**measure("ingest", work, a.cpus, a.sample), "stage": name})
                print(json.dumps(results[-1]), flush=True)
                continue
            results.append(measure(name, work, a.cpus, a.sample))
            print(json.dumps(results[-1]), flush=True)
        load1 = os.getloadavg()[0]
        print(f"\nrows={a.rows} cpus={a.cpus} load avg (1 min) before/after: {load0:.2f}/{load1:.2f}")
        print(f"{'stage':<8} {'seconds':>8} {'s/M rows':>9} {'driver MB':>10} {'worker MB':>10} {'ray sys MB':>10} "
              f"{'disk GB':>8}")
        for r in results:
            print(f"{r['stage']:<8} {r['seconds']:>8.1f} {r['s_per_m_rows']:>9.1f} {r['driver_peak_mb']:>10.0f} "
                  f"{r['worker_peak_mb']:>10.0f} {r['ray_system_peak_mb']:>10.0f} {r['disk_peak_gb']:>8.2f}")
        summary = {"rows": a.rows, "cpus": a.cpus, "load": [load0, load1], "stages": results}
        print(json.dumps(summary))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=1)
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
