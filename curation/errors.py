"""Error types with messages meant for users: one line naming the file, key or column."""


class CurationError(Exception):
    """Base class: a user-facing error. ``str(e)`` is a complete one-line message."""


class DatasetError(CurationError):
    """A dataset on disk is missing, malformed or inconsistent (names the file)."""


class ConfigError(CurationError):
    """A configuration key has a bad value (names the key path and the value)."""


class SchemaError(DatasetError):
    """Written or read metadata does not match ``schemas/sample.schema.json``."""
