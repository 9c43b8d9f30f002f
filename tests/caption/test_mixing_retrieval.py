"""Mixing policy boundaries and retrieval on embeddings where the right answer is known."""
from __future__ import annotations

import pytest
import torch

from curation.caption.mixing import caption_source, caption_sources
from curation.caption.retrieval import CaptionBank, class_membership, load_texts, retrieve
from curation.errors import ConfigError


@pytest.mark.parametrize("raw,syn,has,want", [
    (0.28, 0.9, True, "raw"),          # exactly at the threshold passes
    (0.2799, 0.28, True, "synthetic"),
    (0.2799, 0.2799, True, "none"),
    (None, 0.5, True, "synthetic"),    # unscored raw pair never passes
    (0.1, None, False, "none"),
    (float("nan"), 0.1, True, "none"),
])
def test_mix_policy_boundaries(raw, syn, has, want):
    assert caption_source(raw, syn, has, 0.28, "mix") == want


def test_both_mode_keeps_both_whenever_a_synthetic_caption_exists():
    assert caption_sources([0.0, 0.9, None], [0.0, 0.1, None], ["s", "s", None], 0.28, "both") == \
        ["both", "both", "none"]


def test_retrieval_picks_the_most_similar_candidate_and_respects_classes():
    texts = ["a red circle on a blue background", "two red circles on a white background",
             "a white circle on a red background", "a green square on a white background"]
    emb = torch.eye(4)
    classes = ["red circle", "white circle", "green square"]
    class_emb = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])  # prompt embeddings
    bank = CaptionBank(texts, emb, classes, class_emb, class_membership(texts, classes))
    assert bank.member is not None
    assert bank.member.tolist() == [[True, False, False], [True, False, False],
                                    [False, True, False], [False, False, True]]
    img = torch.tensor([[0.1, 0.2, 0.9, 0.0], [0.0, 0.0, 0.0, 1.0]])
    idx, sims = retrieve(bank, img)
    assert idx[:, 0].tolist() == [2, 3]
    assert sims[1, 0].item() == pytest.approx(1.0)
    # the first image's predicted class is "red circle" (class prompt 0): candidates 0-1 only
    img2 = torch.tensor([[0.9, 0.2, 0.95, 0.0]])
    assert retrieve(bank, img2)[0][0, 0].item() == 2
    assert retrieve(bank, img2, restrict_to_class=True)[0][0, 0].item() == 0
    assert retrieve(bank, img2, restrict_to_class=True, k=2)[0][0].tolist() == [0, 1]


def test_bank_files_are_read_and_bad_ones_named(tmp_path):
    f = tmp_path / "bank.txt"
    f.write_text("a\n\n b \na\n")
    assert load_texts(str(f)) == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ConfigError, match="empty.txt.*no non-empty"):
        load_texts(str(tmp_path / "empty.txt"))
    # a Parquet file's (or a dataset's) caption column is a bank too; "synth" is no longer magic
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": ["x", None, "y", "x"]}), str(tmp_path / "bank.parquet"))
    assert load_texts(str(tmp_path / "bank.parquet")) == ["x", "y"]
    pq.write_table(pa.table({"text": ["x"]}), str(tmp_path / "nocap.parquet"))
    with pytest.raises(ConfigError, match="nocap.parquet.*no 'caption' column"):
        load_texts(str(tmp_path / "nocap.parquet"))
    with pytest.raises(ConfigError, match="not a dataset"):
        load_texts(str(tmp_path))
    with pytest.raises(ConfigError, match="'synth' does not exist"):
        load_texts("synth")
