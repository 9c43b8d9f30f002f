"""Rule boundaries exactly as written (>= vs >), and DataComp's top-fraction rule with ties."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.filters import rules as R


def test_datacomp_basic_boundaries():
    caps = ["two words", "three short w", "abcde f", "a photo of a dog"]
    m = R.datacomp_basic(caps, [200, 199, 600, 200], [600, 400, 200, 601], english=False)
    assert m["datacomp_words"].tolist() == [False, True, False, True]         # > 2 words
    chars = lambda caps: R.datacomp_basic(caps, [300] * 2, [300] * 2, False)["datacomp_chars"].tolist()  # noqa: E731
    assert chars(["a b cde", "a b cdef"]) == [True, True]
    assert chars(["a b c", "a b cd"]) == [False, True]                       # > 5 chars
    assert m["datacomp_min_side"].tolist() == [True, False, True, True]       # >= 200 px
    assert m["datacomp_aspect"].tolist() == [True, True, True, False]         # <= 3 (600/200 passes, 601/200 fails)


def test_datacomp_english_uses_py3langid():
    m = R.datacomp_basic(["a photo of a red circle on a white background",
                          "una foto de un círculo rojo sobre un fondo blanco", ""], [300] * 3, [300] * 3)
    assert m["datacomp_english"].tolist() == [True, False, False]


def test_align_boundaries():
    caps = ["one two", "one two three", " ".join(["w"] * 20), " ".join(["w"] * 21)]
    m = R.align(caps, [201, 200, 603, 300], [400, 300, 201, 900], shared=frozenset())
    assert m["align_words"].tolist() == [False, True, True, False]            # 3 <= words <= 20
    assert m["align_min_side"].tolist() == [True, False, True, True]          # > 200
    assert m["align_aspect"].tolist() == [True, True, False, False]           # < 3 (603/201 = 3 fails)
    shared = R.align(["x", "y", None], [300] * 3, [300] * 3, frozenset({"x"}))["align_shared_alt_text"]
    assert shared.tolist() == [False, True, True]


def test_clip_threshold_is_inclusive_in_float32():
    s = [0.28, float(np.nextafter(np.float32(0.28), np.float32(0))), 0.5, None]
    assert R.clip_threshold(s, 0.28).tolist() == [True, False, True, False]


def test_top_fraction_ties_keep_everything_tied():
    scores = [0.9, 0.8, 0.5, 0.5, 0.5, 0.1, 0.0, 0.0, 0.3, 0.2]    # N = 10
    t = R.top_fraction_threshold(scores, 0.3)                         # rank floor(3) of desc sort = 0.5
    assert t == pytest.approx(0.5)
    assert R.top_fraction(scores, t).sum() == 5                       # 0.9, 0.8 and all three 0.5 ties
    assert R.top_fraction_threshold(scores, 1.0) == 0.0               # f=1 keeps everything (rank clamped to N-1)
    assert R.top_fraction_threshold([], 0.5) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.31, 0.5]), min_size=1, max_size=50),
       st.floats(0.01, 1.0))
def test_top_fraction_matches_datacomp_definition(scores, f):
    desc = sorted(np.asarray(scores, dtype=np.float32).tolist(), reverse=True)
    want = desc[min(math.floor(len(desc) * f), len(desc) - 1)]
    keep = R.top_fraction(scores, R.top_fraction_threshold(scores, f))
    assert keep.tolist() == [np.float32(s) >= want for s in scores]
    assert keep.sum() >= min(len(scores), math.floor(len(scores) * f))


def test_combine_names_every_failed_rule_and_status():
    masks = {"a": np.array([True, False, False]), "b": np.array([True, False, True])}
    keep, reasons = R.combine(3, masks, [None, None, "http_404"])
    assert keep == [True, False, False]
    assert reasons == [[], ["a", "b"], ["http_404"]]
