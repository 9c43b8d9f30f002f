"""Input formats users bring, and bad input refused with a one-line message before any write."""
from __future__ import annotations

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.download.config import DownloadConfig
from curation.download.inputs import InputError, load_records


def load(path, **kw):
    return load_records(DownloadConfig(input=str(path), **kw))[0]


def test_laion_parquet_and_keep_columns(tmp_path):
    p = tmp_path / "laion.parquet"
    pq.write_table(pa.table({"URL": ["http://a/1.jpg", "http://a/2.jpg"], "TEXT": ["x", "y"],
                             "similarity": [0.3, 0.4]}), p)
    recs = load(p, keep_columns=["similarity"])
    assert [(r["url"], r["caption"], r["similarity"]) for r in recs] == [("http://a/1.jpg", "x", 0.3),
                                                                       ("http://a/2.jpg", "y", 0.4)]
    assert len({r["uid"] for r in recs}) == 2 and recs == load(p, keep_columns=["similarity"])  # stable uids


def test_datacomp_uid_kept_and_duplicates_refused(tmp_path):
    p = tmp_path / "dc.jsonl"
    p.write_text("\n".join(json.dumps({"uid": u, "url": f"http://h/{u}", "text": "t"}) for u in ["a1", "b2"]))
    assert [r["uid"] for r in load(p)] == ["a1", "b2"]
    p.write_text("\n".join(json.dumps({"uid": "a1", "url": f"http://h/{i}"}) for i in range(2)))
    with pytest.raises(InputError, match="duplicate uid 'a1'"):
        load(p)


def test_cc3m_headerless_tsv_and_duplicate_rows_each_get_a_record(tmp_path):
    p = tmp_path / "cc3m.tsv"
    p.write_text("a dog\thttp://h/1.jpg\na dog\thttp://h/1.jpg\na cat\thttp://h/2.jpg\n")
    recs = load(p)
    assert [(r["caption"], r["url"]) for r in recs] == [("a dog", "http://h/1.jpg")] * 2 + [("a cat", "http://h/2.jpg")]
    assert len({r["uid"] for r in recs}) == 3


def test_csv_explicit_columns_and_non_utf8(tmp_path):
    p = tmp_path / "l.csv"
    p.write_bytes(b"link,alt\nhttp://h/1.jpg,caf\xe9\n")
    recs, _, stats = load_records(DownloadConfig(input=str(p), url_col="link", caption_col="alt"))
    assert recs[0]["caption"] == "caf\ufffd" and stats["invalid_utf8_chars"] == 1


def test_txt_and_mixed_schemes_are_records(tmp_path):
    p = tmp_path / "u.txt"
    p.write_text("http://h/1.jpg\nftp://h/2.jpg\nfile:///etc/passwd\n")
    assert [r["url"] for r in load(p)] == ["http://h/1.jpg", "ftp://h/2.jpg", "file:///etc/passwd"]


def test_mmc4_and_obelics_flattened(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text(json.dumps({"url": "doc1", "text_list": ["intro", "a red ball", "end"],
                             "image_info": [{"raw_url": "http://h/1.jpg", "matched_text_index": 1}]}) + "\n" +
                 json.dumps({"id": "doc2", "texts": ["hello", None, None, "after"],
                             "images": [None, "http://h/2.jpg", "http://h/3.jpg", None]}) + "\n")
    recs = load(p, input_format="mmc4")
    assert [(r["doc_id"], r["position"], r["url"], r["caption"]) for r in recs] == [
        ("doc1", 0, "http://h/1.jpg", "a red ball"), ("doc2", 1, "http://h/2.jpg", "hello"),
        ("doc2", 2, "http://h/3.jpg", "after")]


@pytest.mark.parametrize("content,match", [
    (None, "not found"), ("", "empty"), ("caption,alt\nx,y\n", "no URL column"),
])
def test_bad_inputs(tmp_path, content, match):
    p = tmp_path / "in.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputError, match=match):
        load(p)


def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys):
    from curation import cli

    p = tmp_path / "in.csv"
    p.write_text("caption\nx\n")
    monkeypatch.setattr(sys, "argv", ["curate", "download", str(p), "--out", str(tmp_path / "ds")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no URL column" in err and "\n" not in err
    assert not (tmp_path / "ds").exists()


# -- streamed planning (the driver holds shard specs, never rows) ---------------------------
def _plan(path, **kw):
    from curation.download.inputs import plan_input

    return plan_input(DownloadConfig(input=str(path), **kw))


def _read_all(specs):
    from curation.download.inputs import read_shard

    return [r for s in specs for r in read_shard(s)]


def test_parquet_planned_from_row_groups(tmp_path):
    import pickle

    p = tmp_path / "big.parquet"
    n = 1000
    pq.write_table(pa.table({"url": [f"http://h/{i}.jpg" for i in range(n)], "text": [f"c{i}" for i in range(n)],
                             "score": list(range(n))}), p, row_group_size=70)
    specs, fp, stats = _plan(p, samples_per_shard=128, keep_columns=["score"])
    assert stats["records"] == n and len(specs) == 8
    assert len(pickle.dumps(specs)) < 8 * 1024  # ranges, not rows
    recs = _read_all(specs)
    assert [r["score"] for r in recs] == list(range(n)) and recs == load(p, samples_per_shard=128,
                                                                          keep_columns=["score"])
    assert [r["uid"] for r in recs] == [r["uid"] for r in load(p, samples_per_shard=999)]  # uids by row, not shard
    assert fp == _plan(p, samples_per_shard=7)[1]


def test_csv_byte_ranges_keep_quoted_newlines(tmp_path):
    p = tmp_path / "l.csv"
    lines = ["url,caption"] + [f'http://h/{i}.jpg,"line one\nline two {i}"' for i in range(25)]
    p.write_text("\n".join(lines) + "\n")
    specs, _, stats = _plan(p, samples_per_shard=4)
    assert len(specs) == 7 and stats["records"] == 25
    recs = _read_all(specs)
    assert [r["caption"] for r in recs] == [f"line one\nline two {i}" for i in range(25)]


@pytest.mark.parametrize("name", ["u.txt", "u.txt.gz"])
def test_text_and_gzip_ranges(tmp_path, name):
    import gzip

    p = tmp_path / name
    data = ("# comment\n\n" + "".join(f"http://h/{i}.jpg\n" for i in range(30))).encode()
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    specs, _, _ = _plan(p, samples_per_shard=8)
    assert len(specs) == 4 and [r["url"] for r in _read_all(specs)] == [f"http://h/{i}.jpg" for i in range(30)]


def test_documents_are_not_split_across_shards(tmp_path):
    p = tmp_path / "docs.jsonl"
    docs = [{"id": f"d{d}", "texts": ["t"] * 3, "images": [f"http://h/{d}/{k}.jpg" for k in range(3)]}
            for d in range(5)]
    p.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    from curation.download.inputs import read_shard

    specs, _, stats = _plan(p, samples_per_shard=4)
    per_shard = [[r["doc_id"] for r in read_shard(s)] for s in specs]
    assert stats["records"] == 15 and all(len(set(ids)) == len(ids) // 3 for ids in per_shard)
    assert [r["url"] for r in _read_all(specs)] == [f"http://h/{d}/{k}.jpg" for d in range(5) for k in range(3)]


def test_duplicate_uid_far_apart_is_refused_by_the_plan(tmp_path):
    p = tmp_path / "dc.parquet"
    uids = [f"u{i}" for i in range(500)] + ["u3"]
    pq.write_table(pa.table({"uid": uids, "url": [f"http://h/{i}" for i in range(501)]}), p, row_group_size=50)
    with pytest.raises(InputError, match=r"duplicate uid 'u3' \(rows 4 and 501\)"):
        _plan(p, samples_per_shard=100)
    q = tmp_path / "dc.jsonl"
    q.write_text("\n".join(json.dumps({"uid": u, "url": "http://h/x"}) for u in ["a", "b", ""]))
    with pytest.raises(InputError, match="row 3 has an empty 'uid'"):
        _plan(q)
