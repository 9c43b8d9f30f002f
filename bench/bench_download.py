"""Download throughput: plain ``img2dataset.download`` vs ``curate download``, same settings, same run.

Line 1, the clean corpus (the issue-16 target, ratio >= 1.1): ``--urls`` distinct URLs (default
10,000) of 640x480 photo-like JPEGs, served from memory by a threaded loopback server in its own
process (127.0.0.1 only; every URL's bytes are distinct: a per-URL JPEG comment), no faults.
Both tools run as a whole process each (``python -c``: imports, Ray or multiprocessing start-up,
download, shard writing, exit), with the same processes, threads, image size (border resize),
encode format/quality, timeout, shard size and no retries. Runs alternate (i2d, ours, i2d, ours...)
and each tool's best of ``--repeat`` is kept, so a load spike from other work on the box hits
both alike. Each run reports wall seconds and the CPU seconds of its whole process tree (Ray's
daemons and workers included, sampled from /proc): on a shared box the CPU ratio is the stable one.
Our per-host politeness is set so it cannot bind (processes x threads: the corpus is one host and
img2dataset has no per-host cap); ``--polite`` adds a run with the default, ``--without-pdq`` one
with ``pdq: false``. Line 2: the fault-heavy synthetic corpus (SynthServer: 404s, stalls, bombs...).

``--phases`` also prints the per-image cost of each step of both pipelines, in one process on the
clean corpus's bytes (fetch over loopback, decode, resize, encode, pHash, sha256, EXIF, tar
writing) and each tool's start-up, which is where the difference comes from.

    python bench/bench_download.py                    # 10,000 URLs, 2 processes x 32 threads, 256 px
    python bench/bench_download.py --without-pdq --phases   # + pdq: false, per-step costs (RESULTS "Download")
    python bench/bench_download.py --urls 2000 --repeat 1 --synth-samples 0 --phases
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

W, H = 640, 480


# -- the clean corpus ------------------------------------------------------------------------
def photo_jpegs(n: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    """``n`` distinct 640x480 photo-like JPEGs (smooth colour fields plus sensor-like noise)."""
    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        r = np.random.default_rng(seed * 100_003 + i)
        coarse = Image.fromarray(r.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        coarse = coarse.resize((W, H), Image.Resampling.BICUBIC)
        a = np.asarray(coarse, dtype=np.int16) + r.integers(-10, 11, (H, W, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The JPEG with a COM segment right after SOI: same pixels, distinct bytes per URL."""
    body = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def _serve(conn, bases: int) -> None:
    """Server process: GET /img/<i>.jpg -> base[i % bases] with comment i; anything else 404."""
    import http.server

    images = photo_jpegs(bases)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            if self.path.startswith("/img/") and name.endswith(".jpg") and name[:-4].isdigit():
                i = int(name[:-4])
                body, code, ctype = with_comment(images[i % len(images)], f"url {i}"), 200, "image/jpeg"
            else:
                body, code, ctype = b"not found", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.request_queue_size = 256
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(srv.server_address[1])
    srv.serve_forever()


class CleanServer:
    """The clean corpus server in a child process (its CPU use is the same for both tools)."""

    def __init__(self, bases: int = 64):
        parent, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(target=_serve, args=(child, bases), daemon=True)
        self.proc.start()
        self.port = parent.recv()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_urls(path: str, base_url: str, n: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": [f"{base_url}/img/{i}.jpg" for i in range(n)],
                             "text": [f"photo number {i}" for i in range(n)]}), path)
    return path


# -- whole-process runs ----------------------------------------------------------------------
_I2D = """
import os, sys, json
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from img2dataset import download
a = json.loads(sys.argv[1])
download(url_list=a["urls"], input_format="parquet", url_col="url", caption_col="text", output_format="webdataset",
         output_folder=a["out"], processes_count=a["processes"], thread_count=a["threads"], image_size=a["size"],
         resize_mode="border", encode_format="jpg", encode_quality=95, timeout=a["timeout"], retries=0,
         number_sample_per_shard=a["per_shard"], distributor="multiprocessing", enable_wandb=False)
"""

_OURS = """
import os, sys, json
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from curation.download.stage import download
a = json.loads(sys.argv[1])
ds = download(a["urls"], a["out"], processes_count=a["processes"], thread_count=a["threads"], image_size=a["size"],
              resize_mode="border", encode_format="jpg", encode_quality=95, timeout=a["timeout"], retries=0,
              samples_per_shard=a["per_shard"], allow_private_networks=["127.0.0.1/32"],
              per_host_concurrency=a.get("per_host", 8), **a.get("extra", {}))
print("SAMPLES", sum(sh["num_images"] for sh in ds.shards))
"""


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux), so the CPU time of every process
    a run starts (Ray's daemons and workers too) is counted when it is reaped."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, start time, CPU seconds so far) for every process (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(d)] = (int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, ValueError, IndexError):
                pass
    return out


class TreeCPU:
    """CPU seconds of every process under this one (except ``skip``), sampled from /proc while a
    run goes on: Ray's daemons and workers are not all reaped by their parents, so rusage of
    children misses them; a sample every 0.2 s misses at most that much per process."""

    def __init__(self, skip: set[int]):
        self.skip, self.seen = skip, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        table = _proc_table()
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            kids.setdefault(ppid, []).append(pid)
        todo = [p for p in kids.get(os.getpid(), []) if p not in self.skip]
        while todo:
            pid = todo.pop()
            _, start, cpu = table[pid]
            self.seen[(pid, start)] = max(cpu, self.seen.get((pid, start), 0.0))
            todo.extend(kids.get(pid, []))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def _reap() -> None:
    """Reap adopted descendants that exited (zombies of Ray's processes); live ones are left alone."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_whole(code: str, args: dict) -> tuple[float, str, float]:
    """(wall s, stdout, CPU s of the whole process tree) of one tool as its own Python process."""
    skip = {p.pid for p in mp.active_children() if p.pid is not None}  # the corpus server
    with TreeCPU(skip) as tree:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # let Ray's orphaned daemons and workers exit (and be sampled) before the next run
    _reap()
    if p.returncode:
        raise RuntimeError(f"run failed ({p.returncode}): {p.stderr[-3000:]}")
    return wall, p.stdout, tree.total


def i2d_successes(folder: str) -> int:
    n = 0
    for f in os.listdir(folder):
        if f.endswith("_stats.json"):
            with open(os.path.join(folder, f)) as fh:
                n += json.load(fh).get("successes", 0)
    return n


def clean_line(args, tmp: str) -> dict:
    with CleanServer() as srv:
        urls = write_urls(f"{tmp}/clean_urls.parquet", srv.base_url, args.urls)
        common = {"urls": urls, "processes": args.processes, "threads": args.threads, "size": args.image_size,
                  "timeout": args.timeout, "per_shard": max(1, args.urls // (2 * args.processes)),
                  # img2dataset has no per-host limit: the same setting for us is a per-host cap that
                  # cannot bind (>= processes x threads; the whole corpus is one loopback host)
                  "per_host": args.processes * args.threads}
        times: dict[str, list[float]] = {"i2d": [], "ours": []}
        cpus: dict[str, list[float]] = {}
        ok: dict[str, int] = {}
        tools = [("i2d", _I2D, {}), ("ours", _OURS, {})]
        if args.polite:
            tools.append(("ours_polite", _OURS, {"per_host": 8}))
        if args.without_pdq:
            tools.append(("ours_no_pdq", _OURS, {"extra": {"pdq": False}}))
        for name, _, _ in tools:
            times.setdefault(name, [])
        for rep in range(args.repeat):
            for tool, code, extra in tools:
                out = f"{tmp}/{tool}_{rep}"
                wall, stdout, cpu = run_whole(code, {**common, **extra, "out": out})
                times[tool].append(wall)
                cpus.setdefault(tool, []).append(cpu)
                ok[tool] = (i2d_successes(out) if tool == "i2d"
                            else int(stdout.rsplit("SAMPLES", 1)[1].split()[0]))
                print(f"  clean run {rep + 1}/{args.repeat} {tool:11s}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
                      f"{ok[tool]} images, load {os.getloadavg()[0]:.1f}", flush=True)
        best = {k: min(v) for k, v in times.items()}
    return {"best": best, "median": {k: statistics.median(v) for k, v in times.items()}, "ok": ok,
            "cpu": {k: min(v) for k, v in cpus.items() if v}}


def synth_line(args, tmp: str) -> tuple[float, float]:
    """The fault-heavy synthetic corpus, in-process, Ray started before the timed region (line 2)."""
    from img2dataset import download as i2d

    from curation.download.stage import download as ours
    from curation.synth import SynthServer, generate, write_url_list

    try:
        from curation.cluster import ensure_ray
    except ImportError:  # before the cluster/ package
        from curation.cluster import ensure_ray
    ensure_ray(num_cpus=args.processes)
    n, timeout = args.synth_samples, 2.0
    generate(f"{tmp}/corpus", samples=n, seed=0)
    with SynthServer(f"{tmp}/corpus", stall_seconds=timeout + 1) as srv:
        urls = write_url_list(f"{tmp}/corpus", srv.base_url, f"{tmp}/urls.parquet")
        per_shard = max(1, n // (2 * args.processes))
        t0 = time.perf_counter()
        i2d(url_list=urls, input_format="parquet", url_col="url", caption_col="text",
            output_format="webdataset", output_folder=f"{tmp}/synth_i2d", processes_count=args.processes,
            thread_count=16, image_size=64, resize_mode="border", timeout=int(timeout), retries=0,
            number_sample_per_shard=per_shard, distributor="multiprocessing", enable_wandb=False)
        base = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        ds = ours(urls, f"{tmp}/synth_ours", processes_count=args.processes, thread_count=16, image_size=64,
                  resize_mode="border", timeout=timeout, request_deadline=timeout * 2, samples_per_shard=per_shard,
                  allow_private_networks=["127.0.0.1/32"])
        mine = ds.num_samples / (time.perf_counter() - t0)
    return base, mine


# -- per-phase costs -------------------------------------------------------------------------
_STARTUP_I2D = """
import os
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import img2dataset.main, img2dataset.downloader, img2dataset.resizer  # what each of its processes imports
"""

_STARTUP_OURS = """
import os
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
from curation.download.stage import download  # the driver's imports
try:
    from curation.cluster import ensure_ray
except ImportError:
    from curation.cluster import ensure_ray
ensure_ray()

@ray.remote(num_cpus=1)
def task():
    import curation.download.tasks  # what each task's worker imports
    return 1

ray.get([task.remote() for _ in range(2)])
ray.shutdown()
"""


def phases(args, n: int = 400) -> list[tuple[str, float, float]]:
    """(phase, img2dataset, ours): CPU ms per image of each step, measured in this process on the
    clean corpus's bytes, plus the wall seconds each tool's start-up takes in a fresh process."""
    import hashlib
    import threading
    import urllib.request

    import numpy as np
    import pyarrow as pa

    from curation.blocklist.screen import screen
    from curation.dedup.phash import phash_image
    from curation.download import fetch as ours_fetch
    from curation.download.config import DownloadConfig
    from curation.download.resize import decode_for
    from curation.download.worker import make_resizer
    from curation.io.writer import DatasetWriter

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import cv2
    import exifread
    from img2dataset.resizer import Resizer
    from img2dataset.writer import WebDatasetSampleWriter

    rows: list[tuple[str, float, float]] = []

    def cpu_ms(fn, items) -> float:
        t0 = time.process_time()
        for x in items:
            fn(x)
        return (time.process_time() - t0) / len(items) * 1e3

    cfg = DownloadConfig(input="x", image_size=args.image_size, allow_private_networks=["127.0.0.1/32"],
                         respect_robots_txt=False, per_host_concurrency=args.processes * args.threads)
    datas = [with_comment(d, f"url {i}") for i, d in enumerate(photo_jpegs(64))]
    datas = (datas * (n // len(datas) + 1))[:n]
    with CleanServer() as srv:
        urls = [f"{srv.base_url}/img/{i}.jpg" for i in range(n)]
        client = ours_fetch.Client(cfg)

        def i2d_fetch(url):  # img2dataset.downloader.download_image
            req = urllib.request.Request(url, data=None, headers={"User-Agent": "Mozilla/5.0 (img2dataset)"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return io.BytesIO(r.read())

        def ours_fetch_one(url):
            return ours_fetch.fetch_with_retries(client, url, 0, ours_fetch.Budget(cfg.request_deadline))

        def threaded_cpu(fn) -> float:  # 32 threads as in the real runs; CPU of this process per image
            it, lock = iter(urls), threading.Lock()

            def loop():
                while True:
                    with lock:
                        u = next(it, None)
                    if u is None:
                        return
                    fn(u)
            t0 = time.process_time()
            ts = [threading.Thread(target=loop) for _ in range(args.threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return (time.process_time() - t0) / len(urls) * 1e3

        threaded_cpu(i2d_fetch)  # warm the server
        rows.append(("fetch (32 threads, HTTP client CPU)", threaded_cpu(i2d_fetch), threaded_cpu(ours_fetch_one)))

    rs = Resizer(image_size=args.image_size, resize_mode="border", resize_only_if_bigger=False,
                 encode_format="jpg", encode_quality=95)
    cv2.setNumThreads(1)
    ours = make_resizer(cfg)
    frames = [decode_for(d, ours) for d in datas]
    i2d_decode = cpu_ms(lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED), datas)
    i2d_resizer = cpu_ms(lambda d: rs(io.BytesIO(d)), datas)
    rows.append(("header checks + decode (i2d: cv2 full size; ours: Pillow, JPEG draft)", i2d_decode,
                 cpu_ms(lambda d: decode_for(d, ours), datas)))
    rows.append(("resize + border + encode", i2d_resizer - i2d_decode, cpu_ms(ours.resize, frames)))
    rows.append(("pHash (ours: on the decoded frame, no second decode)", 0.0,
                 cpu_ms(lambda f: phash_image(f), frames)))
    rows.append(("PDQ + blocklist screen (ours: on the decoded frame)", 0.0,
                 cpu_ms(lambda f: screen({}, b"", cfg, image=f), frames)))
    rows.append(("sha256", cpu_ms(lambda d: hashlib.sha256(d).hexdigest(), datas),
                 cpu_ms(lambda d: hashlib.sha256(d).hexdigest(), datas)))
    rows.append(("EXIF (img2dataset default extract_exif)",
                 cpu_ms(lambda d: exifread.process_file(io.BytesIO(d), details=False), datas), 0.0))
    outs = [rs(io.BytesIO(d))[0] for d in datas]
    with tempfile.TemporaryDirectory() as tmp:
        schema = pa.schema([pa.field(k, pa.string()) for k in ("key", "caption", "url", "status")])
        sw = WebDatasetSampleWriter(0, tmp, True, 5, schema, "jpg")
        t0 = time.process_time()
        for i, img in enumerate(outs):
            sw.write(img, f"{i:09d}", "a caption", {"key": f"{i:09d}", "caption": "a caption", "url": "u",
                                                  "status": "success"})
        sw.close()
        i2d_w = (time.process_time() - t0) / n * 1e3
        w = DatasetWriter(f"{tmp}/ours", stage="download", config={"bench": 1})
        meta = {"url": "u", "caption": "a caption", "status": "success", "error": None, "width": 256,
                "height": 256, "original_width": 640, "original_height": 480, "sha256": "0" * 64,
                "original_size": 1}
        t0 = time.process_time()
        with w.shard(0) as shw:
            for i, img in enumerate(outs):
                shw.add({**meta, "uid": f"{i:08d}"}, img, "jpg")
        ours_w = (time.process_time() - t0) / n * 1e3
    rows.append(("tar + Parquet writing", i2d_w, ours_w))
    rows.append(("TOTAL per image (ms CPU)", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    st_i2d = [run_whole(_STARTUP_I2D, {}) for _ in range(2)]
    st_ours = [run_whole(_STARTUP_OURS, {}) for _ in range(2)]
    rows.append(("start-up, s wall (i2d: one process's imports; ours: imports + Ray + 2 task workers)",
                 min(r[0] for r in st_i2d), min(r[0] for r in st_ours)))
    rows.append(("start-up, s CPU of the process tree", min(r[2] for r in st_i2d), min(r[2] for r in st_ours)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=10_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--synth-samples", type=int, default=600, help="fault-heavy corpus size (0: skip line 2)")
    ap.add_argument("--phases", action="store_true")
    ap.add_argument("--without-pdq", action="store_true", help="also run ours with pdq: false")
    ap.add_argument("--polite", action="store_true",
                    help="also run ours with the default politeness (8 requests in flight per host, cluster-wide)")
    args = ap.parse_args()
    become_subreaper()

    with tempfile.TemporaryDirectory() as tmp:
        if args.urls:
            report_clean(args, clean_line(args, tmp))
        if args.phases:
            print("per-image phase costs (CPU ms/image, one process), and start-up:")
            for name, a, o in phases(args):
                print(f"  {name:78s} img2dataset {a:7.3f}   ours {o:7.3f}", flush=True)
        if args.synth_samples:
            base, mine = synth_line(args, tmp)
            print(f"ratio ours/img2dataset (fault-heavy synth corpus, {args.synth_samples} records, 16 threads, "
                  f"64 px, Ray started before timing): {mine / base:.2f} ({mine:.1f} vs {base:.1f} samples/s)")


def report_clean(args, clean: dict) -> None:
    b, m = clean["best"]["i2d"], clean["best"]["ours"]
    print(f"clean corpus, {args.urls} URLs, {args.processes} processes x {args.threads} threads, "
          f"{args.image_size} px border, whole process, best of {args.repeat}:")
    print(f"  img2dataset.download: {b:6.1f} s  {clean['ok']['i2d'] / b:7.1f} images/s ({clean['ok']['i2d']} ok)")
    print(f"  curate download:      {m:6.1f} s  {clean['ok']['ours'] / m:7.1f} images/s ({clean['ok']['ours']} ok)")
    print(f"ratio ours/img2dataset (clean, whole process): {b / m:.2f} (target >= 1.1; medians "
          f"{clean['median']['i2d']:.1f} s / {clean['median']['ours']:.1f} s -> "
          f"{clean['median']['i2d'] / clean['median']['ours']:.2f})", flush=True)
    c = clean["cpu"]
    print(f"ratio ours/img2dataset (clean, CPU seconds of the whole process tree, best of {args.repeat}): "
          f"{c['i2d'] / c['ours']:.2f} ({c['i2d']:.1f} s vs {c['ours']:.1f} s CPU)")
    for name, what in (("ours_polite", "with the default politeness (8 in flight per host, cluster-wide)"),
                       ("ours_no_pdq", "without the PDQ hash (pdq: false)")):
        if name in clean["best"]:
            p = clean["best"][name]
            print(f"  {what}: {p:6.1f} s wall -> ratio {b / p:.2f}; "
                  f"{c[name]:.1f} s CPU -> ratio {c['i2d'] / c[name]:.2f}")


if __name__ == "__main__":
    main()
