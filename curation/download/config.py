"""The download stage's typed configuration (mirrors img2dataset's options where they overlap)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import field_validator

from curation.config import StageConfig

DEFAULT_USER_AGENT = "curation/0.1 (image-text dataset curation; img2dataset-compatible; +https://github.com/curation/curation)"
# img2dataset's default opt-out directives, plus ``noml``
DEFAULT_OPT_OUT = ("noai", "noimageai", "noindex", "noimageindex", "noml")

InputFormat = Literal["auto", "parquet", "csv", "tsv", "jsonl", "txt", "webdataset", "mmc4"]


class DownloadConfig(StageConfig):
    """Everything that decides what a download run writes.

    Attributes mirror img2dataset (``processes_count``, ``thread_count``, ``image_size``,
    ``resize_mode``, ``encode_format``...) plus the safety settings of DESIGN.md 5.5,
    which are on by default. ``allow_private_networks`` is ``True`` (any private or
    loopback target) or a list of CIDR networks/addresses that are allowed besides
    global addresses (tests allow ``127.0.0.1/32`` only, so ``127.0.0.2`` stays blocked).
    """

    input: str
    input_format: InputFormat = "auto"
    url_col: str | None = None
    caption_col: str | None = None
    uid_col: str | None = None
    keep_columns: list[str] = []
    samples_per_shard: int = 10_000

    processes_count: int = 1
    thread_count: int = 32
    retries: int = 0

    image_size: int = 256
    resize_mode: Literal["no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"] = "border"
    resize_only_if_bigger: bool = False
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = 95
    min_image_size: int = 0
    max_aspect_ratio: float | None = None  # None: no limit

    timeout: float = 10.0
    request_deadline: float = 30.0
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_redirects: int = 5
    allow_private_networks: bool | list[str] = False
    user_agent: str = DEFAULT_USER_AGENT
    user_agent_token: str = "curation"
    opt_out_directives: list[str] = list(DEFAULT_OPT_OUT)
    respect_robots_txt: bool = True
    per_host_concurrency: int = 8
    per_host_rate: float | None = None
    retry_failed: bool = False
    phash: bool = True  # pHash of the bytes as downloaded (before resizing), reused by dedup

    @field_validator("samples_per_shard", "processes_count", "thread_count", "image_size",
                     "max_bytes", "max_pixels", "per_host_concurrency")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("timeout", "request_deadline")
    @classmethod
    def _positive_f(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("allow_private_networks")
    @classmethod
    def _networks(cls, v):
        if isinstance(v, list):
            for n in v:
                ipaddress.ip_network(n, strict=False)  # ValueError names the bad entry
        return v

    @field_validator("opt_out_directives")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().lower() for d in v]
