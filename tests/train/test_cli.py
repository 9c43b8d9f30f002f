"""`curate train` rejects bad run specs with one line naming the key, before any training."""
from __future__ import annotations

import subprocess
import sys


def test_bad_spec_is_one_line_error_naming_key(tmp_path):
    spec = tmp_path / "run.yaml"
    spec.write_text("out: x\nslices:\n  - {name: a, dataset: d.parquet}\nreplay: {policy: fifo}\n")
    proc = subprocess.run([sys.executable, "-c", "from curation.cli import main; main()", "train", str(spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "run.yaml.replay.policy" in proc.stderr and "'fifo'" in proc.stderr
    assert not (tmp_path / "x").exists()
