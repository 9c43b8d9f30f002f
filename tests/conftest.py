"""Shared fixtures: one local Ray per test session, small threads, temp dirs."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray otherwise rewrites 127.0.0.1 to the machine's outward-facing address; tests (and every
# Ray they start, including `ray start` and ray.cluster_utils clusters) stay on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray (2 CPUs) shared by every test that needs Ray."""
    import ray

    from curation.cluster import ensure_ray

    if not ray.is_initialized():
        ensure_ray(num_cpus=2)
    yield ray
    # left running for the rest of the session; pytest exit shuts it down


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:
        pass


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session (``.url(path)``,
    ``.storage_options`` for s3fs/fsspec, ``.bucket``, ``.endpoint_url``)."""
    from tests.s3server import start_s3_server

    server = start_s3_server()
    yield server
    server.stop()
