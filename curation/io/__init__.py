"""The dataset format as a library: write, read, version, commit atomically, on any fsspec URL."""
from curation.io.dataset import Dataset, iter_tar_groups
from curation.io.writer import DatasetWriter, ShardWriter, VersionWriter, write_parquet

__all__ = ["Dataset", "DatasetWriter", "ShardWriter", "VersionWriter", "iter_tar_groups", "write_parquet"]
