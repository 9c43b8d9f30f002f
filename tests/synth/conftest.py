"""One small synthetic corpus shared by the synth tests (read-only: copy before mutating)."""
from __future__ import annotations

import pytest

from curation.synth import generate

SAMPLES = 200


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "corpus"
    summary = generate(root, samples=SAMPLES, seed=11, seed_samples=60, eval_per_slice=10)
    return root, summary
