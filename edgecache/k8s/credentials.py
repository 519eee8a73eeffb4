"""Our bearer token, as the API server must see it now: a fixed token, or a token file that is
re-read whenever it changes.

Projected service-account tokens (in-cluster, and kubelet-managed token files) are replaced on
disk before they expire; a client that read the file once would start failing with 401 about an
hour later. Reading costs one ``stat`` per request and a read only after a change.
"""

from __future__ import annotations

import logging
import os

from edgecache.k8s.connection import ConnectionSettings

__all__ = ["TokenSource"]

log = logging.getLogger(__name__)


class TokenSource:
    """The current token of a :class:`ConnectionSettings` (None: we have none)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._cached: tuple[float, int, str] | None = None

    def token(self) -> str | None:
        """The token to send now. An unreadable token file is logged and gives None, so the
        request goes out without one and the server's 401 says what is wrong."""
        if self.settings.token:
            return self.settings.token
        path = self.settings.token_file
        if not path:
            return None
        try:
            stat = os.stat(path)
            if self._cached is None or self._cached[:2] != (stat.st_mtime, stat.st_size):
                with open(path) as handle:
                    self._cached = (stat.st_mtime, stat.st_size, handle.read().strip())
        except OSError as exc:
            log.warning("cannot read token file %s: %s", path, exc)
            return None
        return self._cached[2]

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or None without a token."""
        token = self.token()
        return f"Bearer {token}" if token else None
