"""A small, hand-designed curated dataset and run folder for the report tests.

36 records in 2 shards (uid ``u000``..``u035``), written with the real ``DatasetWriter``
and ``VersionWriter`` so the report reads exactly what the stages will write:

- download failures: u003, u017 (``http_404``), u029 (``timeout``)            -> 3
- dedup: u010, u022 exact copies of u004; u011 a near copy (phash) of u005       -> 3
  (u010 is also below the CLIP threshold: dedup wins by precedence)
- filter: ``clip_score = 0.20 + 0.03 * (i % 10)``; rule ``clip_score<0.28`` fails for
  i % 10 in {0, 1, 2}; u007 also fails ``datacomp_basic:min_side`` (first rule)
- kept: everything else.

Success rows with i % 10 in {0,1,2}, not failed or dup: u000 u001 u002 u012 u020 u021
u030 u031 u032 -> 9 filtered by CLIP; u007 -> 1 by min_side; kept = 36-3-3-10 = 20.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from curation.io import Dataset, DatasetWriter
from curation.io.writer import VersionWriter

N = 36
PER_SHARD = 18
FAILED = {3: "http_404", 17: "http_404", 29: "timeout"}
DUPS = {10: (4, "exact"), 22: (4, "exact"), 11: (5, "phash")}
COLORS = [("red", (215, 35, 35)), ("green", (35, 160, 60)), ("blue", (35, 75, 215)),
          ("yellow", (240, 205, 30)), ("purple", (135, 55, 185)), ("cyan", (30, 200, 210))]
SLICES = ("2023", "2024", "2025")
EXPECTED = {"total": N, "download": 3, "dedup": 3, "filter:clip_score<0.28": 9,
            "filter:datacomp_basic:min_side": 1, "kept": 20}

# i2t_r1 after training on each slice (rows) evaluated on each slice (columns).
I2T = [[0.60, 0.10, 0.05], [0.45, 0.62, 0.12], [0.30, 0.50, 0.70]]


def image_bytes(i: int) -> tuple[bytes, str]:
    """A 48x48 scene; copies (u010, u022) reuse u004's bytes, u011 is u005 re-encoded."""
    src = DUPS[i][0] if i in DUPS else i
    name, rgb = COLORS[src % len(COLORS)]
    img = Image.new("RGB", (48, 48), (245, 245, 245))
    d = ImageDraw.Draw(img)
    d.rectangle([8 + src % 5, 8, 38, 38 - src % 4], fill=rgb)
    buf = io.BytesIO()
    if i in DUPS and DUPS[i][1] == "phash":
        img.save(buf, format="JPEG", quality=60)
        return buf.getvalue(), "jpg"
    img.save(buf, format="PNG")
    return buf.getvalue(), "png"


def clip(i: int) -> float:
    return round(0.20 + 0.03 * (i % 10), 4)


def _base_row(i: int) -> dict:
    name = COLORS[(DUPS[i][0] if i in DUPS else i) % len(COLORS)][0]
    return {"uid": f"u{i:03d}", "key": f"k{i:03d}", "url": f"http://127.0.0.1:9/img/{i}.png",
            "caption": f"a {name} square <b>#{i}</b>", "status": FAILED.get(i, "success"),
            "error": "HTTP Error 404" if FAILED.get(i) == "http_404" else ("timed out" if i in FAILED else None),
            "width": None if i in FAILED else 48, "height": None if i in FAILED else 48,
            "original_width": None if i in FAILED else 48, "original_height": None if i in FAILED else 48}


def write_dataset(root: str) -> Dataset:
    """Write the dataset (download version, then one 'filter' version with every column)."""
    w = DatasetWriter(root, stage="download", config={"fixture": True})
    for sid in range(N // PER_SHARD):
        with w.shard(sid) as sw:
            for i in range(sid * PER_SHARD, (sid + 1) * PER_SHARD):
                row = _base_row(i)
                if i in FAILED:
                    row["sha256"] = None
                    sw.add(row, None)
                else:
                    data, ext = image_bytes(i)
                    row["sha256"] = hashlib.sha256(data).hexdigest()
                    sw.add(row, data, ext)
    ds = w.commit(list(range(N // PER_SHARD)), stats={"stage": "download", "samples_in": N,
                  "samples_out": N - len(FAILED), "dropped": {"http_404": 2, "timeout": 1},
                  "shards": 2, "seconds": 4.0, "samples_per_s": 9.0})
    vw = VersionWriter(ds, "filter", {"rule": "clip_score<0.28"})
    for sid in ds.shard_ids:
        t = ds.read_meta(sid)
        extra = {k: [] for k in ("clip_score", "clip_model", "dup_of", "dedup_reason", "synthetic_caption",
                                 "synthetic_clip_score", "caption_source", "keep", "reasons", "slice")}
        for uid in t.column("uid").to_pylist():
            i = int(uid[1:])
            ok = i not in FAILED
            reasons = (["datacomp_basic:min_side"] if i == 7 else []) + \
                (["clip_score<0.28"] if ok and clip(i) < 0.28 else [])
            syn = ok and i % 3 == 0
            extra["clip_score"].append(clip(i) if ok else None)
            extra["clip_model"].append("curation-tiny" if ok else None)
            extra["dup_of"].append(f"u{DUPS[i][0]:03d}" if i in DUPS else None)
            extra["dedup_reason"].append(DUPS[i][1] if i in DUPS else None)
            extra["synthetic_caption"].append(f"synthetic caption number {i}" if syn else None)
            extra["synthetic_clip_score"].append(clip(i) + 0.05 if syn else None)
            extra["caption_source"].append(("synthetic" if i % 6 == 0 else "raw") if ok else "none")
            extra["keep"].append(ok and i not in DUPS and not reasons)
            extra["reasons"].append(reasons)
            extra["slice"].append(SLICES[i % 3])
        for k, v in extra.items():
            t = t.append_column(k, pa.array(v, type=pa.list_(pa.string()) if k == "reasons" else None))
        vw.write_meta(sid, t)
    return vw.commit(stats={"stage": "filter", "samples_in": N, "samples_out": 20, "dropped": {"clip": 9},
                            "shards": 2, "seconds": 0.5, "samples_per_s": 72.0})


def write_run(root: str) -> str:
    """A run folder: run.json, dataset/, curated/ (the kept samples), train/metrics.parquet."""
    ds = write_dataset(os.path.join(root, "dataset"))
    kept = [r for r in ds.read_meta().to_pylist() if r["keep"]]
    w = DatasetWriter(os.path.join(root, "curated"), stage="reshard", config={})
    with w.shard(0) as sw:
        for r in kept:
            row = {k: r[k] for k in ("uid", "key", "url", "caption", "status", "error", "width", "height",
                                     "original_width", "original_height", "sha256")}
            sw.add(row, ds.read_image(r), r["image_ext"])
    w.commit([0], stats={"stage": "reshard", "samples_in": 20, "samples_out": 20})
    stages = [{"name": h["stage"], "version": h["version"], "config_hash": h["config_hash"], "stats": h["stats"]}
              for h in ds.history]
    stages.append({"name": "reshard", "version": 1, "config_hash": "abc123", "stats": {
        "stage": "reshard", "samples_in": 36, "samples_out": 20, "dropped": {"not_kept": 16}, "shards": 1,
        "seconds": 2.0, "samples_per_s": 18.0}})
    with open(os.path.join(root, "run.json"), "w") as f:
        json.dump({"pipeline": "fixture-pipeline", "stages": stages}, f)
    os.makedirs(os.path.join(root, "train"))
    rows = [{"train_slice": t, "eval_slice": e, "metric": m, "value": v * (1.0 if m == "i2t_r1" else 0.9)}
            for m in ("i2t_r1", "t2i_r1") for ti, t in enumerate(SLICES)
            for e, v in zip(SLICES, I2T[ti])]
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "train", "metrics.parquet"))
    return root


def write_truth(path: str) -> str:
    """Ground truth by url: failures are broken links, copies duplicates, and the CLIP-filtered
    samples mismatched captions except u012 (clean: a false positive)."""
    rows = []
    for i in range(N):
        noise = []
        if i in FAILED:
            noise.append("broken_link")
        if i in DUPS:
            noise.append("exact_duplicate" if DUPS[i][1] == "exact" else "near_duplicate")
        if i not in FAILED and i not in DUPS and clip(i) < 0.28 and i != 12:
            noise.append("mismatched_caption")
        if i in (33, 34):  # mismatched captions the filter missed (clip >= 0.29): lower recall
            noise.append("mismatched_caption")
        rows.append({"url": f"http://127.0.0.1:9/img/{i}.png", "noise": noise})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
