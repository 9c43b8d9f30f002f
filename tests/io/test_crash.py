"""A killed writer leaves nothing visible, and the next run completes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from curation.errors import DatasetError
from curation.io import Dataset
from curation.io.validate import validate

WRITER = textwrap.dedent("""
    import sys, time
    from curation.io import DatasetWriter
    from tests.helpers import jpeg_bytes
    root, slow = sys.argv[1], sys.argv[2] == "slow"
    w = DatasetWriter(root, stage="crash", config={"n": 4})
    for s in range(4):
        if w.is_committed(s):
            continue
        with w.shard(s) as sw:
            for i in range(20):
                sw.add({"uid": f"{s}-{i}", "caption": "c", "status": "success"}, image=jpeg_bytes((i, s, 0)))
                if slow:
                    print(f"wrote {s} {i}", flush=True)
                    time.sleep(0.02)
    w.commit(list(range(4)))
    print("done", flush=True)
""")


@pytest.mark.chaos
def test_killed_writer_leaves_no_partial_shard(tmp_path):
    root = str(tmp_path / "ds")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, root, "slow"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill in the middle of shard 2
        if line.startswith("wrote 2 7"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    with pytest.raises(DatasetError, match="no manifest"):
        Dataset(root)
    visible = sorted(f for f in os.listdir(os.path.join(root, "shards")) if not f.startswith("."))
    assert visible == ["000000.tar", "000001.tar"]  # committed ones only, no partial shard 2
    done = subprocess.run([sys.executable, "-c", WRITER, root, "fast"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    ds = Dataset(root)
    assert ds.num_samples == 80
    assert validate(ds)["images"] == 80
    leftovers = [f for d, _, fs in os.walk(root) for f in fs if f.startswith(".")]
    assert leftovers == []
