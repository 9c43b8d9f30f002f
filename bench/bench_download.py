"""Download throughput: plain ``img2dataset.download`` vs ``curate download``, same settings.

Both fetch the same synthetic loopback corpus (SynthServer) with the same processes, threads,
image size, encode format and timeout; both write WebDataset tars. Ray is started before the
timed region (a cluster is long-lived in real use). Prints both rates and ours/img2dataset.

    python bench/bench_download.py --samples 2000 --processes 2 --threads 16
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()

    from img2dataset import download as i2d

    from curation.download.stage import download as ours
    from curation.runner.ray_utils import ensure_ray
    from curation.synth import SynthServer, generate, write_url_list

    ensure_ray(num_cpus=args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        generate(f"{tmp}/corpus", samples=args.samples, seed=0)
        with SynthServer(f"{tmp}/corpus", stall_seconds=args.timeout + 1) as srv:
            urls = write_url_list(f"{tmp}/corpus", srv.base_url, f"{tmp}/urls.parquet")
            per_shard = max(1, args.samples // (2 * args.processes))
            t0 = time.perf_counter()
            i2d(url_list=urls, input_format="parquet", url_col="url", caption_col="text",
                output_format="webdataset", output_folder=f"{tmp}/i2d", processes_count=args.processes,
                thread_count=args.threads, image_size=args.image_size, resize_mode="border",
                timeout=args.timeout, retries=0, number_sample_per_shard=per_shard,
                distributor="multiprocessing", enable_wandb=False)
            base = args.samples / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            ds = ours(urls, f"{tmp}/ours", processes_count=args.processes, thread_count=args.threads,
                      image_size=args.image_size, resize_mode="border", timeout=args.timeout,
                      request_deadline=args.timeout * 2, samples_per_shard=per_shard,
                      allow_private_networks=["127.0.0.1/32"])
            mine = ds.num_samples / (time.perf_counter() - t0)
    print(f"img2dataset.download: {base:8.1f} samples/s")
    print(f"curate download:      {mine:8.1f} samples/s")
    print(f"ratio ours/img2dataset: {mine / base:.2f} (target >= 0.9; {args.processes} processes x "
          f"{args.threads} threads, image_size {args.image_size})")


if __name__ == "__main__":
    main()
