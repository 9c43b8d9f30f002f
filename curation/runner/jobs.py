"""Ray Jobs: submit a pipeline to a cluster's job server and follow it.

The job's working directory holds the pipeline YAML (with ``--set`` overrides already
applied and validated here, so a bad config fails before anything is uploaded); the
entrypoint is ``curate run pipeline.yaml``. The cluster's image must have ``curation``
installed (deploy/Dockerfile); ``ship_code`` also uploads this checkout's package.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
import time

import yaml

from curation.errors import CurationError


class JobError(CurationError):
    """The job server could not be reached or refused the job."""


def client(address: str):
    """A job client; sends the cluster's auth token when one is configured.

    Ray clusters started with token authentication (the default in recent Ray) need the
    token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
    """
    from ray.job_submission import JobSubmissionClient

    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # older Ray without token auth
        pass

    try:
        return JobSubmissionClient(address)
    except Exception as e:
        raise JobError(f"cannot reach the Ray job server at {address}: {str(e).splitlines()[0]}") from None


def submit_pipeline(pipeline: str, address: str, *, overrides: list[str] | None = None,
                    ship_code: bool = False, env: dict[str, str] | None = None) -> str:
    """Validate ``pipeline`` locally, then submit it as a Ray Job; return the job id."""
    from curation.runner.spec import load_pipeline

    p = load_pipeline(pipeline, overrides)
    workdir = tempfile.mkdtemp(prefix="curation-job-")
    with open(os.path.join(workdir, "pipeline.yaml"), "w") as f:
        yaml.safe_dump(p.raw, f, sort_keys=False)
    runtime_env: dict = {"working_dir": workdir,
                         "env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}}
    if ship_code:
        import curation

        runtime_env["py_modules"] = [os.path.dirname(curation.__file__)]
    entry = "curate run pipeline.yaml"
    return client(address).submit_job(entrypoint=entry, runtime_env=runtime_env,
                                      metadata={"pipeline": p.name, "output": shlex.quote(p.output)})


def wait_for_job(address: str, job_id: str, timeout: float = 1800) -> tuple[str, str]:
    """Block until the job ends; return (status, logs)."""
    c = client(address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = c.get_job_status(job_id).value
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status, c.get_job_logs(job_id)
        time.sleep(1)
    raise JobError(f"job {job_id} still running after {timeout:.0f}s")


def follow_logs(address: str, job_id: str) -> None:
    async def tail() -> None:
        async for lines in client(address).tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
