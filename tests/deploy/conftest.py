"""deploy/ tests read files only: skip the suite-wide torch set-up (importing torch costs seconds)."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    yield
