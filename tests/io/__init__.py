"""Tests of curation.io: the dataset format, writers, readers, query, validate, and the io CLI."""
