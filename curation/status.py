"""The vocabulary of per-sample ``status`` values (one metadata row per input record).

Download writes these; synth's ground truth predicts them; filters and reports group by
them. ``http_<code>`` covers every HTTP error code (``http_404``, ``http_500``, ...).
"""
SUCCESS = "success"
TIMEOUT = "timeout"                    # connect/read timeout or whole-request deadline
CONNECTION_ERROR = "connection_error"  # refused, reset, DNS failure
NOT_IMAGE = "not_image"                # body is not a decodable image
TOO_LARGE = "too_large"                # response bytes over the cap
TOO_MANY_PIXELS = "too_many_pixels"    # decoded pixel count over the cap (checked before full decode)
OPTED_OUT = "opted_out"                # X-Robots-Tag noai / noimageai / noml ...
ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNREACHABLE = "robots_unreachable"  # robots.txt answered 5xx/429 or failed: all disallowed (retryable)
BLOCKED_ADDRESS = "blocked_address"    # private/loopback/link-local target without allow_private_networks
BAD_URL = "bad_url"                    # not http(s), malformed, empty
TOO_MANY_REDIRECTS = "too_many_redirects"
BLOCKED_HASH = "blocked_hash"          # matched a user's hash blocklist (sha256/md5/PDQ): never written
TRUNCATED = "truncated"                # body shorter than its Content-Length (or cut-off chunked body)
BAD_METADATA = "bad_metadata"          # WebDataset ingest: the .json member is not a JSON object
UNSAFE_MEMBER = "unsafe_member"        # WebDataset ingest: symlink/device/absolute or ".." member name
HTTP_PREFIX = "http_"                  # http_404, http_500, ...

RETRYABLE = {TIMEOUT, CONNECTION_ERROR, TRUNCATED, ROBOTS_UNREACHABLE,
             "http_429", "http_500", "http_502", "http_503", "http_504"}


def http_status(code: int) -> str:
    return f"{HTTP_PREFIX}{int(code)}"


def is_retryable(status: str) -> bool:
    return status in RETRYABLE
