"""A Ray node lost mid-stage costs time, not samples (DESIGN.md guarantee 3)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.chaos
def test_worker_node_killed_mid_stage(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.getcwd()
    r = subprocess.run([sys.executable, "-m", "tests.runner.node_loss_script", str(tmp_path)],
                       capture_output=True, text=True, timeout=540, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["killed"] and out["alive_nodes"] == 2
    assert len(out["interrupted"]) == len(set(out["interrupted"])) == 48  # no loss, no duplicates
    assert out["interrupted"] == out["clean"]
