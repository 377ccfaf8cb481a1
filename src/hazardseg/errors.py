"""One exception type for every bad input, so entry points can print a single clear line.

Messages name the offending file or config key *and* the fix, e.g.
``data.root: '/x' does not exist. Download StreetHazards ... and set data.root=/path``.
"""


class HazardsegError(Exception):
    """A user-fixable problem (bad config, bad data, missing weights). Printed as one line, exit 2."""


class ConfigError(HazardsegError):
    """A config key has an unusable value."""


class DataError(HazardsegError):
    """A dataset file or folder is missing, corrupt or mis-encoded."""


class NotFittedError(HazardsegError):
    """A scorer that needs statistics was used before ``fit``."""
