"""The download stage's typed configuration (mirrors img2dataset's options where they overlap)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import field_validator

from curation.config import StageConfig, execution

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

    Attributes:
        input: URL list (parquet/csv/tsv/jsonl/txt), MMC4/OBELICS jsonl, or WebDataset tars
            (brace pattern; local, s3 or http).
        input_format: ``auto`` picks by file name.
        url_col: URL column (default: url/URL/...).
        caption_col: caption column (default: caption/text/TEXT/...).
        uid_col: uid column (default: uid when present, else derived from the URL).
        keep_columns: input columns copied into the metadata.
        samples_per_shard: input records per output shard.
        retries: in-run retries of retryable failures.
        image_size: target side in pixels for ``resize_mode``.
        resize_mode: img2dataset's resize modes (``no`` keeps the original bytes).
        resize_only_if_bigger: never upscale.
        encode_format: image format in the tars. encode_quality: JPEG/WebP quality.
        min_image_size: smaller sides are refused as ``too_small`` (0: no limit).
        max_aspect_ratio: wider or taller images are refused as ``bad_aspect_ratio``.
        timeout: connect/read timeout per socket operation (s).
        request_deadline: whole-request deadline (s), redirects included.
        max_bytes: bodies larger than this are refused as ``too_large``.
        max_pixels: images with more pixels (read from the header) are refused as ``too_many_pixels``.
        max_decoded_bytes: decoded frames larger than this (from the header) are refused as
            ``too_many_pixels``; bounds memory per image.
        max_redirects: redirects followed, each re-checked.
        allow_private_networks: ``true`` (any private/loopback target) or a list of CIDRs allowed.
        user_agent: the User-Agent header.
        user_agent_token: the token robots.txt groups and X-Robots-Tag directives are matched against.
        opt_out_directives: X-Robots-Tag directives that opt an image out.
        respect_robots_txt: fetch and honour robots.txt per origin.
        robots_error_ttl: seconds an unfetchable robots.txt disallows its origin before a refetch.
        allow_https_downgrade: follow https -> http redirects (off: refused as ``bad_url``).
        retry_failed: re-fetch retryable failures of a finished dataset as a new metadata version.
        phash: pHash of the bytes as downloaded (before resizing), reused by dedup.
        blocklists: hash lists (PATH or NAME=PATH); a matching image is never written anywhere.
        pdq: PDQ hash of the bytes as downloaded (``pdq``, ``pdq_quality``), for later lists.
        pdq_distance: PDQ match radius in bits (of 256).
    """

    input: str
    input_format: InputFormat = "auto"
    url_col: str | None = None
    caption_col: str | None = None
    uid_col: str | None = None
    keep_columns: list[str] = []
    samples_per_shard: int = 10_000

    processes_count: int = execution(1, description="shard tasks running at once")
    thread_count: int = execution(32, description="fetch threads per shard task")
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
    # memory per image: the decoded frame's bytes (pixels x channels x bytes per sample, read from
    # the header before decoding) over this are refused as too_many_pixels; the default admits an
    # 8-bit RGBA image at the pixel cap (peak per image stays under ~2.2x this)
    max_decoded_bytes: int = 256 * 1024 * 1024
    # fetched bodies waiting for the decoder, per task (plus at most one body per fetch thread in flight)
    lookahead_bytes: int = execution(256 * 1024 * 1024, description="fetched bytes waiting for the decoder, per task")
    max_redirects: int = 5
    allow_private_networks: bool | list[str] = False
    user_agent: str = DEFAULT_USER_AGENT
    user_agent_token: str = "curation"
    opt_out_directives: list[str] = list(DEFAULT_OPT_OUT)
    respect_robots_txt: bool = True
    per_host_concurrency: int = execution(8, description="politeness: concurrent requests per host")
    per_host_rate: float | None = execution(None, description="politeness: requests per second per host")
    # a robots.txt that could not be fetched (5xx, network error, timeout) disallows the whole
    # origin for this many seconds, then it is fetched again
    robots_error_ttl: float = 60.0
    allow_https_downgrade: bool = False  # follow https -> http redirects (off: refused as bad_url)
    retry_failed: bool = False
    phash: bool = True  # pHash of the bytes as downloaded (before resizing), reused by dedup
    # hash lists (PATH or NAME=PATH; curation.blocklist): a matching image is never written anywhere
    blocklists: list[str] = []
    pdq: bool = True  # PDQ hash of the bytes as downloaded (pdq, pdq_quality), for later lists
    pdq_distance: int = 31  # PDQ match radius in bits (of 256), PDQ's recommended 31

    @field_validator("samples_per_shard", "processes_count", "thread_count", "image_size",
                     "max_bytes", "max_pixels", "per_host_concurrency", "max_decoded_bytes", "lookahead_bytes")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("timeout", "request_deadline", "robots_error_ttl")
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

    @field_validator("blocklists")
    @classmethod
    def _lists(cls, v: list[str]) -> list[str]:
        from curation.blocklist.lists import load_lists

        load_lists(tuple(v))  # a missing or malformed list fails here, before anything is written
        return v

    @field_validator("pdq_distance")
    @classmethod
    def _distance(cls, v: int) -> int:
        if not 0 <= v <= 256:
            raise ValueError("must be between 0 and 256 bits")
        return v

    @field_validator("opt_out_directives")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [d.strip().lower() for d in v]
