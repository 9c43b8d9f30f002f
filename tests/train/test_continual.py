"""Continual runs: resume after SIGKILL equals an uninterrupted run; DDP equals one process;
outputs (matrix, ledger, heat map) are written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from curation.train.config import RunConfig
from curation.train.run import run_continual
from tests.train.scenes import write_sliced, write_sliced_dataset


def _spec(tmp_path, out):
    data = write_sliced(str(tmp_path / "train.parquet"), 32)
    return {"out": str(out), "eval_dataset": data, "steps_per_slice": 4, "batch_size": 16, "checkpoint_every": 2,
            "warmup_steps": 1,
            "slices": [{"name": n, "dataset": data, "where": f"slice = '{n}'"} for n in ("s1", "s2")],
            "replay": {"policy": "all"}, "loss": {"modx_alpha": 1.0}, "seed": 5}


@pytest.mark.chaos
@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    whole = _spec(tmp_path, tmp_path / "whole")
    run_continual(RunConfig.parse(whole))
    killed = {**whole, "out": str(tmp_path / "killed")}
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        from curation.train.config import RunConfig
        from curation.train.run import run_continual
        def die(k, step, parts):
            if k == 1 and step == 3:   # after the step-2 state of slice 2, mid-way to the next
                os.kill(os.getpid(), signal.SIGKILL)
        run_continual(RunConfig.parse({killed!r}), on_step=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not os.path.exists(tmp_path / "killed" / "summary.json")
    seen = []
    run_continual(RunConfig.parse(killed), on_step=lambda k, s, p: seen.append((k, s)))
    assert seen == [(1, 3), (1, 4)]            # resumed at the exact step, nothing redone
    a = load_file(str(tmp_path / "whole/slices/001-s2/model.safetensors"))
    b = load_file(str(tmp_path / "killed/slices/001-s2/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    summary = json.load(open(tmp_path / "killed/summary.json"))
    assert set(summary["metrics"]) >= {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "zeroshot_acc"}
    m = pq.read_table(tmp_path / "killed/metrics.parquet").to_pylist()
    assert {(r["train_index"], r["eval_index"]) for r in m} == {(i, j) for i in (-1, 0, 1) for j in (0, 1)}
    ledger = pq.read_table(tmp_path / "killed/ledger/001-s2.parquet").to_pydict()
    assert sorted(set(ledger["source_slice"])) == ["s1", "s2"] and len(ledger["uid"]) == 64  # replay all
    assert os.path.getsize(tmp_path / "killed/heatmap.png") > 1000


def _kill_and_resume(spec, out, kill_at=(1, 3)):
    """Run ``spec`` into ``out`` in a subprocess SIGKILLed after step ``kill_at``, then resume here."""
    killed = {**spec, "out": str(out)}
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(1)
        from curation.train.config import RunConfig
        from curation.train.run import run_continual
        def die(k, step, parts):
            if (k, step) == {kill_at!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        run_continual(RunConfig.parse({killed!r}), on_step=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not os.path.exists(out / "summary.json")
    seen = []
    run_continual(RunConfig.parse(killed), on_step=lambda k, s, p: seen.append((k, s)))
    return seen


@pytest.mark.chaos
@pytest.mark.slow
def test_curated_dataset_streams_and_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
    """A curated dataset is streamed through StreamingDataset (replay = a mix with a uid subset);
    a run killed mid-slice resumes from the loader's state_dict at the exact sample and step."""
    import curation.stream.dataset as sdm

    ds = write_sliced_dataset(str(tmp_path / "ds"), 48)
    spec = {"out": str(tmp_path / "whole"), "steps_per_slice": 6, "batch_size": 16, "checkpoint_every": 3,
            "warmup_steps": 1,
            "slices": [{"name": n, "dataset": ds.url, "where": f"slice = '{n}'"} for n in ("s1", "s2")],
            "replay": {"policy": "exp", "budget_samples": 24}, "loss": {"modx_alpha": 1.0}, "seed": 3}
    streamed: list[list[str]] = []
    real = sdm.StreamingDataset.iter_batches

    def spy(self, *a, **kw):
        for step, samples in real(self, *a, **kw):
            streamed.append([s["uid"] for s in samples])
            yield step, samples

    monkeypatch.setattr(sdm.StreamingDataset, "iter_batches", spy)
    run_continual(RunConfig.parse(spec))
    monkeypatch.setattr(sdm.StreamingDataset, "iter_batches", real)
    train_batches = [b for b in streamed if len(b) == 16]
    assert len(train_batches) == 12                                      # 2 slices x 6 steps, all streamed
    assert all(u.startswith("s1-") for b in train_batches[:6] for u in b)
    assert sorted(u for b in train_batches[:3] for u in b) == sorted(u for b in train_batches[3:6] for u in b)
    mixed = {u.split("-")[0] for b in train_batches[6:] for u in b}
    assert mixed == {"s1", "s2"}                                         # slice 2 replays slice 1
    ledger = pq.read_table(tmp_path / "whole/ledger/001-s2.parquet").to_pydict()
    replayed = {u for u, s in zip(ledger["uid"], ledger["source_slice"]) if s == "s1"}
    assert len(replayed) == 24 and {u for b in train_batches[6:] for u in b if u.startswith("s1-")} <= replayed
    state = json.load(open(tmp_path / "whole/checkpoints/s001-0000003/state.json"))
    assert state["position"]["loader"]["epoch"] == 0 and state["position"]["loader"]["plans"]
    assert state["exposure"]["kind"] == "stream"
    assert [(s["slice"], s["subset"], s["samples"]) for s in state["exposure"]["sources"]] == \
        [("s2", False, 48), ("s1", True, 24)]

    # killed after step 5 of slice 2: resumes from the step-3 state (mid-epoch 0 of the pool of
    # 72 = 4 batches), crosses into epoch 1 at step 5
    seen = _kill_and_resume(spec, tmp_path / "killed", kill_at=(1, 5))
    assert seen == [(1, 4), (1, 5), (1, 6)]    # resumed at the exact step, nothing redone
    a = load_file(str(tmp_path / "whole/slices/001-s2/model.safetensors"))
    b = load_file(str(tmp_path / "killed/slices/001-s2/model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = json.load(open(tmp_path / "killed/eval_rows.json"))
    assert {r["metric"] for r in rows} >= {"i2t_r1", "zeroshot_acc"}   # class_label streamed for zero-shot


_DDP_WORKER = """
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from curation.train.config import LossSpec
from curation.train.loop import rank_chunk, train_step, frozen_copy
from curation.train.optim import make_optimizer
from curation.train.seed import create_train_model
from safetensors.torch import save_file
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if world > 1:
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
model, _, _ = create_train_model("curation-tiny", None, seed=1)
old = frozen_copy(model)
torch.manual_seed(2)
with torch.no_grad():   # make the teacher differ from the student
    for p in model.parameters():
        p.add_(0.01 * torch.randn_like(p))
g = torch.Generator().manual_seed(3)
images, tokens = torch.randn(8, 3, 32, 32, generator=g), torch.randint(1, 400, (8, 16), generator=g)
net = model
if world > 1:
    from torch.nn.parallel import DistributedDataParallel
    net = DistributedDataParallel(model)
opt = make_optimizer(model, 1e-3)
idx = rank_chunk(torch.arange(8))
parts = train_step(net, opt, images[idx], tokens[idx], LossSpec(modx_alpha=1.0, uniform_weight=0.1), old)
if rank == 0:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
"""


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_single_process_global_batch(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single.safetensors"
    subprocess.run([sys.executable, str(worker), "0", "1", "", str(single)], check=True, env=env, capture_output=True)
    ddp = tmp_path / "ddp.safetensors"
    store = str(tmp_path / "store")
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", store, str(ddp)], env=env,
                              stderr=subprocess.PIPE) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    a, b = load_file(str(single)), load_file(str(ddp))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
