"""`curate synth` and `curate serve` as a user runs them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app, main


def test_synth_command_writes_a_corpus(tmp_path):
    out = tmp_path / "c"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--samples", "40", "--seed", "2",
                                   "--base-url", "http://127.0.0.1:9999", "--seed-samples", "6",
                                   "--eval-per-slice", "2"])
    assert res.exit_code == 0, res.output
    assert "wrote 40 records" in res.output
    urls = pq.read_table(out / "urls.parquet")
    assert urls.num_rows == 40 and urls["url"][0].as_py().startswith("http://127.0.0.1:9999/")
    assert (out / "truth.parquet").is_file() and (out / "seed.parquet").is_file()


def test_synth_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["curate", "synth", "--out", str(tmp_path / "x"), "--samples", "-3"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: samples must be a positive integer, got -3"
    assert not (tmp_path / "x").exists()


def test_serve_until_interrupted(corpus):
    root, _ = corpus
    assert "Ctrl-C" in CliRunner().invoke(app, ["serve", "--help"]).output  # registered in `curate`
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The same function `curate serve` runs, without importing every other command (fast start).
    code = "import typer; from curation.synth.commands import serve; typer.run(serve)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving ") and " at http://127.0.0.1:" in line, line + proc.stderr.read()
        base = line.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(base + "/robots.txt", timeout=10) as resp:
            assert b"Disallow: /private/" in resp.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
