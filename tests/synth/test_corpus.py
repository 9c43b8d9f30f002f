"""The synthetic corpus: determinism, ground truth that is exactly right, drift, clean sets."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.fftpack import dct

from curation import status as st
from curation.synth import SynthError, caption_bank, class_labels, generate, render_scene


def scipy_phash(img: Image.Image) -> np.ndarray:
    """The imagehash recipe, written independently of the generator's numpy version."""
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dct(dct(g, axis=0), axis=1)[:8, :8]
    return (low > np.median(low)).flatten()


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw: dict[str, Any] = dict(samples=120, seed_samples=12, eval_per_slice=3)
    generate(tmp_path / "a", seed=5, **kw)
    generate(tmp_path / "b", seed=5, **kw)
    generate(tmp_path / "c", seed=6, **kw)
    a, b, c = (all_files(tmp_path / x) for x in "abc")
    assert len(a) > 100 and a == b
    for name in ("urls.parquet", "truth.parquet", "seed.parquet", "eval.parquet"):
        assert a[name] != c[name]


def test_every_url_has_exactly_one_truth_row(corpus):
    root, summary = corpus
    urls = pq.read_table(root / "urls.parquet")
    truth = pq.read_table(root / "truth.parquet")
    assert urls.column_names[:3] == ["uid", "url", "text"]
    assert urls.num_rows == truth.num_rows == summary["samples"]
    assert urls["uid"].to_pylist() == truth["uid"].to_pylist()
    assert len(set(urls["uid"].to_pylist())) == urls.num_rows
    assert urls["url"].to_pylist() == truth["url"].to_pylist()
    assert len(set(urls["url"].to_pylist())) == urls.num_rows  # duplicates live under other URLs
    assert urls["text"].to_pylist() == truth["alt_text"].to_pylist()


def test_noise_counts_and_expected_statuses(corpus):
    root, summary = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    counts = Counter(k for r in rows for k in r["noise"])
    assert dict(counts) == summary["noise_counts"]
    n = summary["samples"]
    for kind in ("http_404", "http_500", "timeout", "not_image", "oversized", "too_many_pixels",
                 "noai", "robots", "redirect", "transient", "tiny", "exact_dup", "near_dup",
                 "mismatched_caption", "boilerplate_caption"):
        assert counts[kind] >= 1, kind
        assert counts[kind] == max(1, round(summary["rates"][kind] * n)), kind
    expect = {"http_404": "http_404", "http_500": "http_500", "timeout": st.TIMEOUT,
              "not_image": st.NOT_IMAGE, "oversized": st.TOO_LARGE, "noai": st.OPTED_OUT,
              "too_many_pixels": st.TOO_MANY_PIXELS, "robots": st.ROBOTS_DISALLOWED,
              "redirect": st.SUCCESS, "transient": st.SUCCESS, "blocked_redirect": st.BLOCKED_ADDRESS}
    for r in rows:
        fetch = [k for k in r["noise"] if k in expect]
        assert len(fetch) <= 1, r["noise"]  # at most one fetch fault per record
        assert r["expected_status"] == (expect[fetch[0]] if fetch else st.SUCCESS), r
        assert (r["path"] is None) == (r["expected_status"] in ("http_404", "http_500", "not_image",
                                                                  "too_many_pixels"))


def test_captions_are_truthful_unless_marked(corpus):
    root, _ = corpus
    bank = set(caption_bank())
    for r in pq.read_table(root / "truth.parquet").to_pylist():
        assert r["true_caption"] in bank
        assert r["class_label"] == f"{r['color']} {r['shape']}"
        noisy = "mismatched_caption" in r["noise"] or "boilerplate_caption" in r["noise"]
        assert r["caption_mismatched"] == noisy
        if noisy:
            assert r["true_caption"] not in r["alt_text"]
        else:
            assert r["true_caption"] in r["alt_text"].lower()
        if "mismatched_caption" in r["noise"]:
            assert f"{r['color']} {r['shape']}" not in r["alt_text"]


def test_duplicate_groups_and_near_dup_phash(corpus):
    root, _ = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    by_uid = {r["uid"]: r for r in rows}
    hashes = {}
    for r in rows:
        if r["path"]:
            hashes[r["uid"]] = scipy_phash(Image.open(root / r["path"]))
    for r in rows:
        if r["dup_kind"] is None:
            assert r["dup_of_uid"] is None
            continue
        o = by_uid[r["dup_of_uid"]]
        assert o["dup_kind"] is None and o["dup_group"] == r["dup_group"]
        assert o["true_caption"] == r["true_caption"] and o["expected_status"] == "success"
        assert r["slice"] >= o["slice"]
        dist = int((hashes[r["uid"]] != hashes[o["uid"]]).sum())
        if r["dup_kind"] == "exact":
            assert (root / r["path"]).read_bytes() == (root / o["path"]).read_bytes()
            assert r["sha256"] == o["sha256"]
        else:
            assert r["sha256"] != o["sha256"] and dist <= 4, dist
    # originals from different groups are perceptually distinct: the only near pairs are planned
    orig = [r for r in rows if r["dup_kind"] is None and r["path"]]
    groups = [r["dup_group"] for r in orig]
    assert len(set(groups)) == len(groups)
    h = np.stack([hashes[r["uid"]] for r in orig])
    d = (h[:, None, :] != h[None, :, :]).sum(-1)
    np.fill_diagonal(d, 64)
    assert d.min() > 8


def test_image_sizes_formats_and_files(corpus):
    root, _ = corpus
    fmts = Counter()
    for r in pq.read_table(root / "truth.parquet").to_pylist():
        if not r["path"]:
            continue
        img = Image.open(root / r["path"])
        fmts[img.format] += 1
        assert img.size == (r["width"], r["height"])
        short, long = sorted(img.size)
        if "tiny" in r["noise"]:
            assert long < 64
        elif "extreme_aspect" in r["noise"]:
            assert long / short >= 3.9
        else:
            assert short >= 200 and long / short < 1.5
    assert fmts["JPEG"] > fmts["PNG"] > 0 and fmts["WEBP"] > 0


def test_slices_drift(corpus):
    root, summary = corpus
    rows = pq.read_table(root / "truth.parquet").to_pylist()
    assert set(summary["slice_counts"]) == {"2023", "2024", "2025"}
    first = {r["class_label"] for r in rows if r["slice"] == "2023" and r["dup_kind"] is None}
    assert not any(lbl.split()[0] in ("purple", "pink", "cyan") for lbl in first)
    assert not any(lbl.split()[1] in ("star", "hexagon", "cross") for lbl in first)
    assert set(class_labels(["2023"])) < set(class_labels(["2024"])) < set(class_labels())
    late = [r for r in rows if r["slice"] == "2025"]
    assert any(r["color"] == "cyan" or r["shape"] == "cross" for r in late)


def test_seed_and_eval_sets_are_clean(corpus):
    root, _ = corpus
    bank = set(caption_bank())
    seed = pq.read_table(root / "seed.parquet")
    ev = pq.read_table(root / "eval.parquet")
    assert seed.column_names == ev.column_names == ["image", "caption", "class_label", "slice"]
    assert seed.num_rows == 60 and Counter(seed["slice"].to_pylist()) == {"2023": 20, "2024": 20, "2025": 20}
    assert Counter(ev["slice"].to_pylist()) == {"2023": 10, "2024": 10, "2025": 10}
    for r in seed.to_pylist() + ev.to_pylist():
        img = Image.open(io.BytesIO(r["image"]))
        assert img.format == "PNG" and img.size == (64, 64)
    assert all(r["caption"] in bank for r in ev.to_pylist())  # eval: bare bank captions
    # seed: each caption is a web phrasing of a true bank caption, and an exact share of the
    # pairs says it carries a watermark (those images carry the stamp)
    from curation.synth import noise as nz

    phrasings = {p: (b, bool(extra)) for b in bank for extra in ("", nz.SEED_STAMP_CAPTION)
                 for p in nz.phrasings(b + extra)}
    missing = [r["caption"] for r in seed.to_pylist() if r["caption"] not in phrasings]
    assert not missing, missing
    found = [phrasings[r["caption"]] for r in seed.to_pylist()]
    assert all(r["class_label"] in b for r, (b, _) in zip(seed.to_pylist(), found))
    assert sum(stamped for _, stamped in found) == round(nz.SEED_STAMP_RATE * seed.num_rows)
    assert len({r["caption"] for r in seed.to_pylist()} - bank) > 0  # not only bare captions


def test_render_scene_is_deterministic():
    a = render_scene("red", "star", "blue", 3, width=100, height=80, seed=3)
    b = render_scene("red", "star", "blue", 3, width=100, height=80, seed=3)
    c = render_scene("red", "star", "blue", 3, width=100, height=80, seed=4)
    assert a.size == (100, 80) and a.tobytes() == b.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="unknown scene part"):
        render_scene("mauve", "star", "blue")


@pytest.mark.parametrize("kwargs, match", [
    ({"samples": 0}, "samples"), ({"seed": -1}, "seed"), ({"base_url": "ftp://x"}, "base_url"),
    ({"slices": ()}, "slices"), ({"slices": ("a", "a")}, "slices"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, match):
    with pytest.raises(SynthError, match=match):
        generate(tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SynthError, match="not an empty folder"):
        generate(tmp_path, samples=5)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_corpus_json_states_rates(corpus):
    root, summary = corpus
    meta = json.loads((root / "corpus.json").read_text())
    assert meta == summary and meta["rates"]["mismatched_caption"] == 0.15
    assert "transient" in meta["status_notes"]


def test_every_shape_is_drawn_distinctly():
    """Each shape word names a different drawing: a diamond is a rhombus, not a rotated
    square (no model could tell those apart, since every shape is drawn at a random angle)."""
    from curation.synth.scenes import SHAPES

    masks = {s: np.asarray(render_scene("black", s, "white", 1, width=256, height=256, seed=5),
                           np.float32).mean(axis=2) < 128 for s in SHAPES}
    # same seed: same size, place and angle, only the outline differs
    assert 0.45 < masks["diamond"].mean() / masks["square"].mean() < 0.65
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] != masks[b]).mean() > 0.02, (a, b)
