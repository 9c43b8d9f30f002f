"""Tests of curation.runner: pipeline specs, the executor, resume after kill -9, Ray Jobs."""
