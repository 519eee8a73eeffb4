"""Exception types shared by every edgecache layer.

Storage misses use Python's own exceptions (``FileNotFoundError``, ``PermissionError``) so user
code needs no edgecache import to handle them; the types below cover what has no standard
equivalent, and say whether retrying can help::

    EdgeCacheError                      base of everything edgecache raises itself
    ├── ConfigError (ValueError)        bad option, size, URL or spec: permanent, fix the input
    ├── BackendNotInstalledError        (ImportError) URL protocol whose plugin is missing
    ├── PinError                        a pin that cannot fit in the quota: permanent
    ├── ObjectChangedError (OSError)    the object changed under a read: re-plan on its new version
    ├── CorruptBlockError               a cached block failed its checks: a miss, fetched again
    └── TemporaryError                  may succeed later: ``retry_after_seconds`` says when
        ├── BackendUnavailableError     (ConnectionError) the backend cannot be reached
        ├── TierUnavailableError        a cache tier (the SSD directory) cannot be used now
        └── ViewNotReadyError           a dataset's view cannot be published yet (CSI retries)

Errors from libraries underneath are translated at the boundary with ``raise ... from exc``.
A message that shows a value the user gave shows it through :func:`quoted`, cut to a line.
"""

from __future__ import annotations

import errno
import reprlib
from typing import Any

__all__ = [
    "QUOTED_MAX_CHARS",
    "BackendNotInstalledError",
    "BackendUnavailableError",
    "ConfigError",
    "CorruptBlockError",
    "EdgeCacheError",
    "ObjectChangedError",
    "PinError",
    "TemporaryError",
    "TierUnavailableError",
    "ViewNotReadyError",
    "label",
    "quoted",
]

#: Longest rendering of a user value inside a message: one value never fills the line.
QUOTED_MAX_CHARS = 80

_bounded_repr = reprlib.Repr()
# reprlib stops walking a nested value after these many items and levels, so even an aliased
# YAML structure that expands to millions of nodes costs a few microseconds to show.
_bounded_repr.maxlevel = 3
_bounded_repr.maxdict = _bounded_repr.maxlist = _bounded_repr.maxtuple = 4
_bounded_repr.maxset = _bounded_repr.maxfrozenset = 4
_bounded_repr.maxstring = _bounded_repr.maxlong = _bounded_repr.maxother = QUOTED_MAX_CHARS


def quoted(value: Any, *, limit: int = QUOTED_MAX_CHARS) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (cut with ``...``).

    Bounded in time and size whatever ``value`` is (a 5 MB string, a YAML bomb's shared lists):
    the value is never rendered whole before it is cut.
    """
    try:
        text = _bounded_repr.repr(value)
    except Exception:  # a repr that fails (an int beyond Python's digit limit) is not ours
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def label(value: Any) -> str:
    """A name in a message: as written when it is a plain short string (a DNS-1123 name has at
    most 63 characters), else :func:`quoted` and cut."""
    if isinstance(value, str) and len(value) <= 63 and value.isprintable() and value.strip():
        return value
    return quoted(value)


class EdgeCacheError(Exception):
    """Base class of the errors edgecache raises itself."""


class ConfigError(EdgeCacheError, ValueError):
    """A setting, size, URL or spec is malformed. Permanent: retrying the same input fails."""


class BackendNotInstalledError(EdgeCacheError, ImportError):
    """No backend plugin is installed for a URL's protocol; the message names the package."""


class PinError(EdgeCacheError):
    """A pin request cannot be honoured (it would not fit in the quota). Permanent."""


class ObjectChangedError(EdgeCacheError, OSError):
    """The object no longer has the version a read was planned for.

    Raised by a backend whose ranged read checks the version (``If-Match``, ``fstat``) and by
    the cache when a block comes back with the wrong length. The read engine answers it by
    planning the read again on the current version (once); it reaches the user only when a
    file handle has already returned bytes of the old version, which it must never mix.
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1:
            # errno ESTALE ("stale file handle") as for any OSError a user may inspect.
            super().__init__(errno.ESTALE, args[0])
        else:
            super().__init__(*args)


class CorruptBlockError(EdgeCacheError):
    """A cached block is truncated, altered, or belongs to another key (treated as a miss)."""


class TemporaryError(EdgeCacheError):
    """A failure that may go away; retry after :attr:`retry_after_seconds`."""

    def __init__(self, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class BackendUnavailableError(TemporaryError, ConnectionError):
    """The backend cannot be reached (network down, endpoint refusing connections)."""


class TierUnavailableError(TemporaryError):
    """A cache tier cannot be used right now (reads bypass it; pins and unpins raise this)."""


class ViewNotReadyError(TemporaryError):
    """A dataset's materialised view cannot be published yet; the message says why.

    The CSI node service answers ``NodePublishVolume`` with a retryable gRPC code carrying this
    message, so kubelet retries and the pod's event tells the user what it waits for (the view
    is still loading, the Dataset is unknown to this node, ...), never an empty directory.
    """
