"""Backend health as the filesystem sees it: online, or offline with a background probe.

The filesystem reports every "unreachable" error here. Once a backend is offline, reads stop
asking it: cached metadata and blocks are served at local speed, anything else fails at once
with :class:`~edgecache.errors.BackendUnavailableError` (no timeout per read, no retry storm).
A background task probes the backend (``Backend.probe``) every ``probe_interval`` seconds and
puts it back online on the first success. One record per read engine, so every filesystem of a
process that reads this backend through one cache directory sees the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from edgecache.backends import Backend
from edgecache.metrics import BACKEND_ONLINE

__all__ = ["BackendHealth"]

log = logging.getLogger(__name__)


class BackendHealth:
    """Online/offline state of one backend, with a background probe while offline."""

    def __init__(self, backend: Backend, *, probe_interval: float) -> None:
        self.backend = backend
        self.probe_interval = probe_interval
        self._online = True
        self._offline_since = 0.0
        self._offline_since_wall: float | None = None
        self._last_error = ""
        self._probe_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        BACKEND_ONLINE.labels(backend.identity).set(1)

    @property
    def online(self) -> bool:
        """Whether requests should go to the backend."""
        return self._online

    @property
    def offline_since(self) -> float | None:
        """Wall-clock time (``time.time()``) it went offline; None while online."""
        return None if self._online else self._offline_since_wall

    @property
    def last_error(self) -> str:
        """The error that took the backend offline (empty while online)."""
        return self._last_error

    def went_unreachable(self, exc: BaseException) -> None:
        """An operation found the backend unreachable: go offline and start probing."""
        with self._lock:
            if not self._online:
                return
            self._online = False
            self._offline_since = time.monotonic()
            self._offline_since_wall = time.time()
            self._last_error = str(exc) or type(exc).__name__
        BACKEND_ONLINE.labels(self.backend.identity).set(0)
        log.warning(
            "backend %s unreachable (%s); serving from cache, probing every %.0f s",
            self.backend.identity,
            self._last_error,
            self.probe_interval,
        )
        self._start_probe()

    def _start_probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # sync caller: the next async operation starts the probe
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = loop.create_task(self._probe_until_online())

    def ensure_probing(self) -> None:
        """Start the probe if offline and none runs (called from async operations)."""
        if not self._online:
            self._start_probe()

    async def _probe_until_online(self) -> None:
        while not self._online:
            await asyncio.sleep(self.probe_interval)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.probe(), timeout=self.probe_interval)
                self._back_online()

    def _back_online(self) -> None:
        with self._lock:
            if self._online:
                return
            self._online = True
            offline_for = time.monotonic() - self._offline_since
            self._last_error = ""
        BACKEND_ONLINE.labels(self.backend.identity).set(1)
        log.warning("backend %s reachable again after %.1f s", self.backend.identity, offline_for)

    def succeeded(self) -> None:
        """A request to the backend succeeded (also ends an offline period early)."""
        if not self._online:
            self._back_online()
