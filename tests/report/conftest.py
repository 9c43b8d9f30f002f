"""Fixtures of the report tests: one run folder and its rendered report, built once per module."""
from __future__ import annotations

import os

import pytest

from curation.report import build_report

from .fixtures import write_run, write_truth


@pytest.fixture(scope="package")
def run_dir(tmp_path_factory) -> str:
    return write_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="package")
def truth_file(tmp_path_factory) -> str:
    return write_truth(str(tmp_path_factory.mktemp("truth") / "truth.parquet"))


@pytest.fixture(scope="package")
def run_report(run_dir, truth_file, tmp_path_factory) -> str:
    """Path of the full report: run folder with continual metrics and ground truth."""
    out = str(tmp_path_factory.mktemp("report") / "report.html")
    assert build_report(run_dir, out, truth=truth_file, max_examples=4) == out
    assert os.path.getsize(out) > 0
    return out
