"""A demo you can install: the wheel carries the pipelines, and ``curate demo`` runs from a fresh
virtual environment outside the repository (no checkout on ``sys.path``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_pipelines_equal_the_packaged_ones():
    top = {p.name: p.read_bytes() for p in (ROOT / "pipelines").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (ROOT / "curation" / "pipelines").glob("*.yaml")}
    assert packaged and top.keys() == packaged.keys(), (sorted(top), sorted(packaged))
    for name in top:
        assert top[name] == packaged[name], f"pipelines/{name} differs from curation/pipelines/{name}"


def test_packaged_pipeline_lookup():
    from curation.errors import ConfigError
    from curation.resources import pipeline_names, pipeline_path, resolve_pipeline

    assert {"demo", "laion_threshold", "clip_top30", "align_noisy", "continual"} <= set(pipeline_names())
    assert Path(pipeline_path("demo")).read_bytes() == (ROOT / "pipelines" / "demo.yaml").read_bytes()
    # outside a checkout, `pipelines/x.yaml` and `x` name the packaged file
    assert resolve_pipeline("pipelines/laion_threshold.yaml") in (
        "pipelines/laion_threshold.yaml", pipeline_path("laion_threshold"))
    assert resolve_pipeline("laion_threshold") == pipeline_path("laion_threshold")
    with pytest.raises(ConfigError, match="no packaged pipeline 'nope'"):
        pipeline_path("nope")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "curation", src / "curation", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = dist.glob("curation-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_wheel_installs_and_runs_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("curation/pipelines/demo.yaml", "curation/schemas/pipeline.schema.json", "curation/cli.py"):
        assert needed in names, needed
    # a fresh venv outside the repository; the repository venv's site-packages (torch, ray, ...)
    # are reachable through a .pth line, which adds the folder but runs none of its .pth files,
    # so the editable install of this checkout stays out of sight
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "repo_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    threads = str(min(os.cpu_count() or 1, 4))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, CURATION_CACHE=str(tmp_path / "cache"))
    where = subprocess.run([str(py), "-c", "import curation; print(curation.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site) and str(ROOT) not in where, where
    # small and quick: the demo's full quality needs the default seed steps (tests/test_demo.py)
    r = subprocess.run([str(venv / "bin" / "curate"), "demo", "--samples", "200", "--seed-pairs", "400",
                        "--seed-steps", "60", "--train-steps", "2", "--out", str(work / "demo")],
                       cwd=work, env=env, capture_output=True, text=True, timeout=1400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "removal kinds against the ground truth" in r.stdout and "demo done in" in r.stdout
    assert (work / "demo" / "report.html").stat().st_size > 10_000
