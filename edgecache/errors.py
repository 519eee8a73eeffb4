"""Exception types shared by every edgecache layer.

Storage misses use Python's own exceptions (``FileNotFoundError``, ``PermissionError``) so user
code needs no edgecache import to handle them; the types below cover what has no standard
equivalent, and say whether retrying can help::

    EdgeCacheError                      base of everything edgecache raises itself
    ├── ConfigError (ValueError)        bad option, size, URL or spec: permanent, fix the input
    ├── BackendNotInstalledError        (ImportError) URL protocol whose plugin is missing
    ├── PinError                        a pin that cannot fit in the quota: permanent
    └── TemporaryError                  may succeed later: ``retry_after_seconds`` says when
        └── BackendUnavailableError     (ConnectionError) the backend cannot be reached

Errors from libraries underneath are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BackendNotInstalledError",
    "BackendUnavailableError",
    "ConfigError",
    "EdgeCacheError",
    "PinError",
    "TemporaryError",
]


class EdgeCacheError(Exception):
    """Base class of the errors edgecache raises itself."""


class ConfigError(EdgeCacheError, ValueError):
    """A setting, size, URL or spec is malformed. Permanent: retrying the same input fails."""


class BackendNotInstalledError(EdgeCacheError, ImportError):
    """No backend plugin is installed for a URL's protocol; the message names the package."""


class PinError(EdgeCacheError):
    """A pin request cannot be honoured (it would not fit in the quota). Permanent."""


class TemporaryError(EdgeCacheError):
    """A failure that may go away; retry after :attr:`retry_after_seconds`."""

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class BackendUnavailableError(TemporaryError, ConnectionError):
    """The backend cannot be reached (network down, endpoint refusing connections)."""
