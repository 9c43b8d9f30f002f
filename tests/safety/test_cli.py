"""The safety commands from the command line: classify, train-head, block, faces (one line out, errors one line)."""
from __future__ import annotations

from typer.testing import CliRunner

from curation.cli import app
from tests.safety.embeds import dataset_with_embeddings
from tests.safety.test_heads import NSFWModel, _save

runner = CliRunner()


def test_classify_train_head_and_block_commands(tmp_path):
    ds = dataset_with_embeddings(str(tmp_path / "ds"), dim=768, model="ViT-L-14/openai")
    head = _save(NSFWModel().eval(), str(tmp_path / "nsfw.pth"))
    r = runner.invoke(app, ["classify", ds.url, "--head", f"nsfw={head}"])
    assert r.exit_code == 0, r.output
    assert "nsfw_score for 10 of 12 samples" in r.output
    r = runner.invoke(app, ["train-head", ds.url, "--label", "shard = 0", "--holdout", "0.5", "--seed", "1",
                            "--out", str(tmp_path / "h.safetensors")])
    assert r.exit_code == 0, r.output
    assert "held-out precision" in r.output and (tmp_path / "h.safetensors").exists()
    r = runner.invoke(app, ["train-head", ds.url, "--label", "true", "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "only one class" in str(r.exception)
    r = runner.invoke(app, ["classify", ds.url, "--head", "nsfw"])
    assert r.exit_code != 0 and "expected NAME=PATH" in str(r.exception or r.output)
    lst = tmp_path / "l.txt"
    lst.write_text("ab" * 32 + "\n")
    r = runner.invoke(app, ["block", ds.url, "--list", str(lst)])
    assert r.exit_code == 0, r.output
    assert "blocked 0 of 12 samples" in r.output


def test_faces_command(tmp_path):
    from tests.safety.test_faces import _dataset

    ds = _dataset(str(tmp_path / "ds"))
    r = runner.invoke(app, ["faces", ds.url])
    assert r.exit_code == 0, r.output
    assert "1 faces in 1 of 3 samples" in r.output


def test_download_blocklist_flag_checks_the_list_first(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("abc\n")
    r = runner.invoke(app, ["download", str(tmp_path / "urls.parquet"), "--out", str(tmp_path / "out"),
                            "--blocklist", str(bad)])
    assert r.exit_code != 0 and "bad.txt:1: 3 hex digits" in str(r.exception)
    assert not (tmp_path / "out").exists()
