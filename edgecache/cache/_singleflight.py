"""Single-flight: concurrent misses on one block cause one backend fetch.

Inside a process, :class:`FlightMap` lets the first caller for a digest do the work while every
other caller (any thread, any event loop) waits for its result. Across processes sharing a cache
directory, :func:`stripe_lock` takes an exclusive ``flock`` on one of 4096 lock files chosen by
digest; the holder re-checks the SSD tier before fetching, so a block another process just
stored is read, not fetched again. The lock is taken without blocking a thread (non-blocking
attempts with a short async back-off): a blocked executor thread could otherwise be the one the
lock holder needs. The kernel drops a killed holder's lock, so a crash never wedges the cache.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import threading
from collections.abc import AsyncIterator

__all__ = ["FlightMap", "stripe_lock"]


class FlightMap:
    """Digest -> the future of the one fetch in progress for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, concurrent.futures.Future[bytes]] = {}

    def join(self, digest: str) -> tuple[concurrent.futures.Future[bytes], bool]:
        """(future, True) for the leader who must fill it, (future, False) for followers."""
        with self._lock:
            future = self._flights.get(digest)
            if future is not None:
                return future, False
            future = concurrent.futures.Future()
            self._flights[digest] = future
            return future, True

    def land(self, digest: str) -> None:
        """The leader is done (result or exception set): later callers start afresh."""
        with self._lock:
            self._flights.pop(digest, None)


@contextlib.asynccontextmanager
async def stripe_lock(path: str) -> AsyncIterator[bool]:
    """Hold an exclusive flock on ``path``; yields False (unlocked) if the file is unusable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
