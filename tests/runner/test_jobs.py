"""`curate submit` against a real `ray start --head` on 127.0.0.1 (Ray Jobs SDK)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from curation.io import Dataset
from tests.helpers import make_dataset
from tests.s3server import free_port


@pytest.fixture
def ray_head(tmp_path):
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")  # short: AF_UNIX paths max 107 bytes
    taken: set[int] = set()
    gcs, dash, client, agent, metrics = (free_port(taken) for _ in range(5))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", NO_ALBUMENTATIONS_UPDATE="1")
    # the job's entrypoint (`curate run ...`) runs in the head's environment: put this
    # interpreter's bin folder (the project's venv) on its PATH, as an installed image would
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--metrics-export-port={metrics}", "--include-dashboard=true",
         f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
        env=env, stdout=open(tmp_path / "ray-head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2).read()
            break
        except urllib.error.HTTPError:  # answering (401 under token auth): it is up
            break
        except Exception:
            if proc.poll() is not None:
                pytest.fail("ray start --head exited early: " + (tmp_path / "ray-head.log").read_text()[-2000:])
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("Ray job server did not come up")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_submit_pipeline_as_ray_job(tmp_path, ray_head):
    ds_root = str(tmp_path / "ds")
    make_dataset(ds_root, shards=2, per_shard=4)
    out = str(tmp_path / "run")
    spec = {"name": "job-test", "input": ds_root, "output": out,
            "stages": [{"stage": "reshard", "config": {"samples_per_shard": 5}}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    r = subprocess.run([curate, "submit", str(path), "--address", ray_head, "--wait"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = [line for line in r.stdout.splitlines() if line.startswith("raysubmit_")][0]
    st = subprocess.run([curate, "status", job_id, "--address", ray_head], capture_output=True, text=True)
    assert st.stdout.strip() == "SUCCEEDED"
    logs = subprocess.run([curate, "logs", job_id, "--address", ray_head], capture_output=True, text=True)
    assert "reshard" in logs.stdout
    assert Dataset(out + "/curated").num_samples == 8


def test_submit_rejects_bad_config_before_upload(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "input": str(tmp_path), "output": str(tmp_path / "o"),
                                    "stages": [{"stage": "nope"}]}))
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    r = subprocess.run([curate, "submit", str(path), "--address", "http://127.0.0.1:9"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "stages.0.stage" in r.stderr
