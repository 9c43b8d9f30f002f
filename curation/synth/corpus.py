"""``generate``: draw a synthetic noisy web corpus with exact ground truth.

Writes (into ``out_dir``, atomically: built beside it, then renamed into place):
``urls.parquet`` (uid, url, text), ``truth.parquet`` (one row per record), ``seed.parquet``
and ``eval.parquet`` (clean pairs), ``images/`` and ``routes.json`` (what the server serves),
``corpus.json`` (parameters, rates and counts). Same arguments => same bytes in every file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.errors import CurationError
from curation.io.images import open_image
from curation.synth import noise as nz
from curation.synth.imaging import EXTENSIONS, decompression_bomb, encode, hamming, html_page, near_duplicate, phash
from curation.synth.plan import Record, plan_corpus, rngs, uid_for
from curation.synth.routes import build_routes, url_path
from curation.synth.scenes import DEFAULT_SLICES, render_scene, sample_scene, slice_position
from curation.synth.stamp import stamp

UNIQUE_MIN_DISTANCE = 8    # distinct originals differ by more than this many pHash bits
NEAR_DUP_MAX_DISTANCE = 4  # a near duplicate stays within this many bits of its original
_BACKOFF = (1.0, 0.6, 0.35, 0.15, 0.0)


class SynthError(CurationError):
    """Bad arguments to the synthetic corpus generator."""


def _check_args(out_dir, samples, seed, base_url, slices, seed_samples, eval_per_slice) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise SynthError(f"samples must be a positive integer, got {samples!r}")
    if not isinstance(seed, int) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    if not str(base_url).startswith(("http://", "https://")):
        raise SynthError(f"base_url must start with http:// or https://, got {base_url!r}")
    if not slices or len(set(slices)) != len(slices) or not all(isinstance(s, str) and s for s in slices):
        raise SynthError(f"slices must be distinct non-empty names, got {slices!r}")
    if seed_samples < 0 or eval_per_slice < 0:
        raise SynthError("seed_samples and eval_per_slice must be >= 0")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "corpus.json").exists())):
        raise SynthError(f"{out} exists and is not an empty folder or a synthetic corpus")


def _render(rec: Record, seed: int, attempt: int) -> Image.Image:
    layout = int.from_bytes(hashlib.sha256(f"{seed}:{rec.index}:{attempt}".encode()).digest()[:4], "big")
    s = rec.scene
    img = render_scene(s.color, s.shape, s.background, s.count, width=rec.width, height=rec.height, seed=layout)
    if rec.watermark:
        img = stamp(img, np.random.default_rng([int(seed), rec.index, attempt, 0x57A4]))
    return img


def _draw_original(rec: Record, seed: int, known: np.ndarray) -> tuple[bytes, int]:
    """Draw and encode; redraw the layout while it is perceptually close to an earlier
    original (``known``: their hashes), so that the only near-duplicate pairs are the planned
    ones. Distances are checked on the decoded bytes a downloader will see."""

    def distance(h: int) -> int:
        return int(np.bitwise_count(known ^ np.uint64(h)).min()) if len(known) else 64

    for attempt in range(64):
        img = _render(rec, seed, attempt)
        if distance(phash(img, fast=True)) <= UNIQUE_MIN_DISTANCE:
            continue  # cheap pre-check on the drawing, before paying for encode + decode
        data = encode(img, rec.fmt, rec.quality)
        h = phash(open_image(data))
        if distance(h) > UNIQUE_MIN_DISTANCE:
            return data, h
    raise AssertionError(f"could not draw a distinct layout for record {rec.index}")


def _draw_near_dup(orig: bytes, orig_hash: int, r: np.random.Generator) -> bytes:
    img = open_image(orig).convert("RGB")
    for strength in _BACKOFF:
        edited, quality = near_duplicate(img, r, strength)
        data = encode(edited, "jpeg", quality)
        if hamming(phash(open_image(data)), orig_hash) <= NEAR_DUP_MAX_DISTANCE:
            return data
    return encode(img, "jpeg", 90)  # a plain re-encode of a flat scene always qualifies


def _alt_text(rec: Record, r: np.random.Generator, num_slices: int) -> str:
    if rec.caption_noise == "boilerplate_caption":
        return nz.boilerplate(r)
    if rec.caption_noise == "mismatched_caption":
        pos = slice_position(rec.slice_index, num_slices)
        while True:  # the alt-text of another scene: a different class, not just a recount
            other = sample_scene(r, pos)
            if other.class_label != rec.scene.class_label:
                return nz.describe(other, r)
    return nz.describe(rec.scene, r)


def _draw_corpus(plan: list[Record], seed: int, root: Path) -> dict[int, dict]:
    """Write every served file under ``root/images``; return per-record file facts."""
    facts: dict[int, dict] = {}
    hashes = np.zeros(len(plan), dtype=np.uint64)
    n_hashes = 0
    has_dups = {rec.dup_of for rec in plan if rec.dup_of is not None}
    bomb_path = "images/bomb.png"
    (root / bomb_path).write_bytes(decompression_bomb())
    r = rngs(seed)["render"]
    for rec in sorted(plan, key=lambda x: x.index):  # originals (lower indexes) before dups
        uid = rec.uid
        if rec.fetch == "too_many_pixels":
            facts[rec.index] = {"file": bomb_path, "path": None}
            continue
        if rec.fetch == "not_image":
            rel = f"images/{uid}.html"
            (root / rel).write_bytes(html_page(rec.scene.caption))
            facts[rec.index] = {"file": rel, "path": None}
            continue
        if not rec.has_image:
            facts[rec.index] = {"file": None, "path": None}
            continue
        if rec.dup_kind == "exact":
            assert rec.dup_of is not None  # a duplicate record always names its original
            facts[rec.index] = dict(facts[rec.dup_of])  # the very same bytes, another URL
            continue
        if rec.dup_kind == "near":
            assert rec.dup_of is not None  # a duplicate record always names its original
            o = facts[rec.dup_of]
            data, h = _draw_near_dup(o["bytes"], o["phash"], r), None
        else:
            data, h = _draw_original(rec, seed, hashes[:n_hashes])
            hashes[n_hashes] = h
            n_hashes += 1
        rel = f"images/{uid}.{EXTENSIONS[rec.fmt]}"
        (root / rel).write_bytes(data)
        w, hgt = open_image(data).size
        facts[rec.index] = {"file": rel, "path": rel, "width": w, "height": hgt,
                            "sha256": hashlib.sha256(data).hexdigest()}
        if rec.index in has_dups:  # near duplicates are made from the served bytes
            facts[rec.index].update(bytes=data, phash=h)
    return facts


def _truth_table(plan: list[Record], facts: dict[int, dict], base_url: str, seed: int,
                 slices: Sequence[str]) -> pa.Table:
    r = rngs(seed)["captions"]
    uid_of = {rec.index: rec.uid for rec in plan}
    rows = []
    for rec in plan:
        f = facts[rec.index]
        fetch_status = nz.EXPECTED_STATUS.get(rec.fetch, "success") if rec.fetch else "success"
        rows.append({
            "uid": rec.uid, "url": base_url.rstrip("/") + url_path(rec), "path": f["path"],
            "alt_text": _alt_text(rec, r, len(slices)), "true_caption": rec.scene.caption,
            "class_label": rec.scene.class_label, "color": rec.scene.color,
            "shape": rec.scene.shape, "background": rec.scene.background,
            "count": rec.scene.count, "slice": slices[rec.slice_index], "noise": rec.noise,
            "dup_group": rec.dup_of if rec.dup_of is not None else rec.index,
            "dup_kind": rec.dup_kind, "dup_of_uid": None if rec.dup_of is None else uid_of.get(rec.dup_of),
            "caption_mismatched": rec.caption_noise is not None,
            "expected_status": fetch_status, "format": rec.fmt if f["path"] else None,
            "width": f.get("width"), "height": f.get("height"), "sha256": f.get("sha256"),
        })
    return pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA)


TRUTH_SCHEMA = pa.schema([
    ("uid", pa.string()), ("url", pa.string()), ("path", pa.string()), ("alt_text", pa.string()),
    ("true_caption", pa.string()), ("class_label", pa.string()), ("color", pa.string()),
    ("shape", pa.string()), ("background", pa.string()), ("count", pa.int64()),
    ("slice", pa.string()), ("noise", pa.list_(pa.string())), ("dup_group", pa.int64()),
    ("dup_kind", pa.string()), ("dup_of_uid", pa.string()), ("caption_mismatched", pa.bool_()),
    ("expected_status", pa.string()), ("format", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("sha256", pa.string()),
])
CLEAN_SCHEMA = pa.schema([("image", pa.binary()), ("caption", pa.string()),
                          ("class_label", pa.string()), ("slice", pa.string())])


def clean_pairs(n_per_slice: Sequence[int], slices: Sequence[str], r: np.random.Generator,
                size: int = 64, stamps: np.random.Generator | None = None,
                stamp_rate: float = 0.0, phrasing: np.random.Generator | None = None) -> pa.Table:
    """Clean (image PNG bytes, true caption) pairs: the seed set and the eval sets.

    "Clean" means the caption is true. With ``stamps``, ``round(stamp_rate * n)`` of the pairs
    (chosen and drawn from ``stamps``, so ``r``'s draws and every other pair stay the same)
    carry the crawl's stock-photo watermark, and their caption says so
    (``noise.SEED_STAMP_CAPTION`` after the scene's caption). With ``phrasing``, each caption
    is phrased as the crawl's true alt texts are (``noise.describe``, drawn from ``phrasing``);
    without it, captions are the bare scene captions of ``caption_bank()``.
    """
    total = sum(n_per_slice)
    stamped: set[int] = set()
    if stamps is not None and stamp_rate > 0 and total:
        k = min(int(round(stamp_rate * total)), total)
        stamped = set(stamps.choice(total, size=k, replace=False).tolist())
    rows = []
    for si, n in enumerate(n_per_slice):
        for _ in range(n):
            s = sample_scene(r, slice_position(si, len(slices)))
            img = render_scene(s.color, s.shape, s.background, s.count, width=2 * size,
                               height=2 * size, seed=int(r.integers(2**31)))
            extra = ""
            if stamps is not None and len(rows) in stamped:
                img = stamp(img, stamps)
                extra = nz.SEED_STAMP_CAPTION
            img = img.reduce(2)  # 2x supersampling: smooth edges, as a downscaled photo has
            caption = nz.describe(s, phrasing, extra) if phrasing is not None else s.caption + extra
            rows.append({"image": encode(img, "png"), "caption": caption,
                         "class_label": s.class_label, "slice": slices[si]})
    return pa.Table.from_pylist(rows, schema=CLEAN_SCHEMA)


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def generate(out_dir: str | os.PathLike, *, samples: int = 2000, seed: int = 0,
             base_url: str = "http://127.0.0.1:8765", slices: Sequence[str] = DEFAULT_SLICES,
             seed_samples: int = 1500, eval_per_slice: int = 200) -> dict:
    """Write a synthetic noisy web corpus and its ground truth into ``out_dir``.

    Guarantees: the same arguments give the same bytes in every file; every ``urls.parquet``
    row has exactly one ``truth.parquet`` row (same order); distinct originals differ by more
    than ``UNIQUE_MIN_DISTANCE`` pHash bits while each near duplicate is within
    ``NEAR_DUP_MAX_DISTANCE`` of its original; the corpus appears in ``out_dir`` all at once
    (an existing corpus there is replaced; a failed run leaves the old state).

    Returns:
        The summary also written to ``corpus.json`` (parameters, rates, counts per noise
        kind and per expected status).
    """
    slices = tuple(slices)
    _check_args(out_dir, samples, seed, base_url, slices, seed_samples, eval_per_slice)
    out = Path(out_dir).resolve()
    tmp = out.parent / f".{out.name}.synth-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        plan = plan_corpus(samples, seed, len(slices))
        for pos, rec in enumerate(plan):
            rec.uid = uid_for(seed, pos)
        facts = _draw_corpus(plan, seed, tmp)
        truth = _truth_table(plan, facts, base_url, seed, slices)
        _write_parquet(truth, tmp / "truth.parquet")
        _write_parquet(_url_list(truth), tmp / "urls.parquet")
        routes = build_routes(plan, facts, seed)
        (tmp / "routes.json").write_text(json.dumps(routes, indent=1, sort_keys=True))
        streams = rngs(seed)
        r, k = streams["seedset"], len(slices)
        # the seed set as trusted web pairs (phrased like the crawl's alt texts, some stamped);
        # the eval set in bare bank captions, unstamped (noise.SEED_STAMP_RATE)
        _write_parquet(clean_pairs([seed_samples // k + (i < seed_samples % k) for i in range(k)], slices, r,
                                   stamps=streams["seedset_watermark"], stamp_rate=nz.SEED_STAMP_RATE,
                                   phrasing=streams["seedset_captions"]), tmp / "seed.parquet")
        _write_parquet(clean_pairs([eval_per_slice] * k, slices, r), tmp / "eval.parquet")
        summary = _summary(truth, samples, seed, base_url, slices, seed_samples, eval_per_slice)
        (tmp / "corpus.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _url_list(truth: pa.Table) -> pa.Table:
    return pa.table({"uid": truth["uid"], "url": truth["url"], "text": truth["alt_text"]})


def _summary(truth: pa.Table, samples, seed, base_url, slices, seed_samples, eval_per_slice) -> dict:
    noise_counts: dict[str, int] = {}
    for kinds in truth["noise"].to_pylist():
        for k in kinds:
            noise_counts[k] = noise_counts.get(k, 0) + 1
    status_counts: dict[str, int] = {}
    for s in truth["expected_status"].to_pylist():
        status_counts[s] = status_counts.get(s, 0) + 1
    slice_counts = {s: truth["slice"].to_pylist().count(s) for s in slices}
    return {
        "format": "curation-synth/1", "samples": samples, "seed": seed, "base_url": base_url,
        "slices": list(slices), "seed_samples": seed_samples, "eval_per_slice": eval_per_slice,
        "seed_stamp_rate": nz.SEED_STAMP_RATE, "seed_stamp_caption": nz.SEED_STAMP_CAPTION,
        "rates": {**nz.CAPTION_RATES, **nz.DUP_RATES, **nz.FETCH_RATES, **nz.IMAGE_RATES, **nz.STAMP_RATES},
        "noise_counts": dict(sorted(noise_counts.items())),
        "expected_status_counts": dict(sorted(status_counts.items())),
        "slice_counts": slice_counts, "status_notes": nz.STATUS_NOTES,
        "unique_min_phash_distance": UNIQUE_MIN_DISTANCE,
        "near_dup_max_phash_distance": NEAR_DUP_MAX_DISTANCE,
        "files": {"urls": "urls.parquet", "truth": "truth.parquet", "seed": "seed.parquet",
                  "eval": "eval.parquet", "routes": "routes.json", "images": "images/"},
    }
