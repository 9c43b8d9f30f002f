"""The HTML report: sections, numbers, self-containment, absent inputs, errors, CLI."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import pytest
from PIL import Image

from curation.errors import ConfigError, DatasetError
from curation.report import SECTIONS, ReportError, build_report

from .fixtures import EXPECTED, write_dataset


def _html(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _section(doc: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', doc, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def test_every_section_present_in_order(run_report):
    doc = _html(run_report)
    positions = [doc.index(f'<section id="{sid}">') for sid, _ in SECTIONS]
    assert positions == sorted(positions)
    for sid, _ in SECTIONS:
        assert f'href="#{sid}"' in doc  # navigation links to it
        assert 'class="absent"' not in _section(doc, sid), f"{sid} says its input is absent"


def test_funnel_counts_match_the_fixture(run_report):
    funnel = _section(_html(run_report), "funnel")
    cells = re.findall(r"<tr><td>.*?</td><td>(.*?)</td><td class=\"num\">([\d,]+)</td>", funnel)
    got = dict(cells)
    assert got["http_404"] == "2" and got["timeout"] == "1"
    assert got["exact"] == "2" and got["phash"] == "1"
    assert got["clip_score&lt;0.28"] == str(EXPECTED["filter:clip_score<0.28"])
    assert got["datacomp_basic:min_side"] == "1"
    assert got[""] == str(EXPECTED["kept"])  # the kept row


def test_header_and_throughput(run_report):
    doc = _html(run_report)
    header = doc[doc.index("<header>"):doc.index("</header>")]
    assert "<b>36</b><span>records in</span>" in header and "<b>20</b><span>kept</span>" in header
    assert "fixture-pipeline" in header
    thr = _section(doc, "throughput")
    assert "From run.json" in thr
    for stage, rate in (("download", "9"), ("filter", "72"), ("reshard", "18")):
        assert re.search(rf"<td>{stage}</td>.*?<td class=\"num\">{rate}</td>", thr), stage


def test_continual_and_truth_numbers(run_report):
    doc = _html(run_report)
    cont = _section(doc, "continual")
    assert "i2t_r1" in cont and "t2i_r1" in cont
    # forgetting of 2023 = 0.60 - 0.30; of 2024 = 0.62 - 0.50; none for the last slice
    assert re.search(r"<td>2023</td><td class=\"num\">0.3</td>", cont)
    assert re.search(r"<td>2024</td><td class=\"num\">0.12</td>", cont)
    truth = _section(doc, "truth")
    row = re.search(r"clip_score&lt;0.28</td><td class=\"num\">9</td><td>mismatched_caption</td>"
                    r"<td class=\"num\">10</td><td class=\"num\">8</td><td class=\"num\">(.*?)</td>"
                    r"<td class=\"num\">(.*?)</td>", truth)
    assert row and row.groups() == ("0.889", "0.800")


def test_page_is_self_contained_and_escapes_captions(run_report):
    doc = _html(run_report)
    # Nothing is loaded from anywhere: every src/href is a data URI or an in-page anchor.
    for attr in re.findall(r'(?:src|href)="([^"]*)"', doc):
        assert attr.startswith(("data:", "#")), attr
    assert "<link" not in doc and "<script" not in doc and "url(" not in doc
    assert "<b>#" not in doc and "&lt;b&gt;#" in doc  # captions are text, not markup


def test_thumbnails_are_decodable_images(run_report):
    doc = _html(run_report)
    uris = re.findall(r'src="data:image/(jpeg|png|svg\+xml);base64,([^"]+)"', doc)
    kinds = [k for k, _ in uris]
    assert kinds.count("svg+xml") >= 4  # funnel, scores, caption scores, heat map
    raster = [base64.b64decode(d) for k, d in uris if k != "svg+xml"]
    assert len(raster) >= 12
    for blob in raster:
        img = Image.open(io.BytesIO(blob))
        img.load()
        assert 0 < max(img.size) <= 160


def test_bare_dataset_says_what_is_absent(tmp_path):
    ds = write_dataset(str(tmp_path / "ds"))
    out = build_report(ds.url, str(tmp_path / "r.html"), max_examples=2)
    doc = _html(out)
    assert "No continual run" in _section(doc, "continual")
    assert "No ground truth given" in _section(doc, "truth")
    assert "manifest&#x27;s history" in _section(doc, "throughput")
    kept = _section(doc, "samples-kept")
    assert kept.count('<figure class="thumb') == 2


def test_unscored_dataset_sections_degrade(tmp_path):
    from curation.io import DatasetWriter

    w = DatasetWriter(str(tmp_path / "raw"), stage="download")
    with w.shard(0) as sw:
        buf = io.BytesIO()
        Image.new("RGB", (20, 30), (10, 200, 10)).save(buf, format="PNG")
        sw.add({"uid": "a", "url": "http://x/a", "caption": "green", "status": "success", "sha256": "0"},
               buf.getvalue(), "png")
        sw.add({"uid": "b", "url": "http://x/b", "caption": "gone", "status": "http_500"}, None)
    w.commit([0])
    doc = _html(build_report(str(tmp_path / "raw"), str(tmp_path / "r.html")))
    assert "was not scored" in _section(doc, "clip-scores")
    assert "not deduplicated" in _section(doc, "duplicates")
    assert "captions were not generated" in _section(doc, "captions")
    assert "http_500" in _section(doc, "samples-removed")


def test_bad_inputs_raise_one_line_errors(tmp_path, run_dir):
    with pytest.raises(ReportError, match="neither a dataset"):
        build_report(str(tmp_path), str(tmp_path / "r.html"))
    with pytest.raises(ConfigError, match="max_examples"):
        build_report(run_dir, str(tmp_path / "r.html"), max_examples=0)
    with pytest.raises(ReportError, match="truth file not found"):
        build_report(run_dir, str(tmp_path / "r.html"), truth=str(tmp_path / "none.parquet"))
    bad = tmp_path / "badrun"
    shutil.copytree(run_dir, bad)
    (bad / "run.json").write_text("{nope")
    with pytest.raises(ReportError, match="run.json: malformed JSON"):
        build_report(str(bad), str(tmp_path / "r.html"))
    (bad / "run.json").write_text(json.dumps({"stages": []}))
    (bad / "train" / "metrics.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="metrics.parquet: unreadable Parquet"):
        build_report(str(bad), str(tmp_path / "r.html"))
    (bad / "train" / "metrics.parquet").unlink()
    shutil.rmtree(bad / "dataset" / "meta")
    with pytest.raises(DatasetError, match="listed by the manifest but missing"):
        build_report(str(bad), str(tmp_path / "r.html"))
    assert not os.path.exists(tmp_path / "r.html")


def test_cli_report(run_dir, truth_file, tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    out = tmp_path / "cli.html"
    res = CliRunner().invoke(app, ["report", run_dir, "--out", str(out), "--truth", truth_file,
                                   "--max-examples", "2"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    assert '<section id="truth">' in _html(str(out))


def test_report_never_loads_a_whole_metadata_table(run_dir, truth_file, tmp_path, monkeypatch):
    """Counts are DuckDB aggregates and shown rows are bounded draws: the report must build
    without ever materialising the metadata in Python (at 1B rows that table does not fit)."""
    from curation.io import Dataset

    def refuse(self, *a, **kw):
        raise AssertionError("the report read a whole metadata table")

    monkeypatch.setattr(Dataset, "read_meta", refuse)
    out = build_report(run_dir, str(tmp_path / "r.html"), truth=truth_file, max_examples=4)
    doc = _html(out)
    assert 'class="absent"' not in _section(doc, "funnel") and 'class="absent"' not in _section(doc, "truth")
