"""Single-flight: concurrent misses on one block cause one backend fetch.

Inside a process, :class:`FlightMap` lets the first caller for a digest do the work while every
other caller (any thread, any event loop) waits for its result. Across processes sharing a cache
directory, :func:`stripe_lock` takes an exclusive ``flock`` on one of 4096 lock files chosen by
digest; the holder re-checks the SSD tier before fetching, so a block another process just
stored is read, not fetched again. The lock is taken without blocking a thread (non-blocking
attempts with a short async back-off): a blocked executor thread could otherwise be the one the
lock holder needs. The kernel drops a killed holder's lock, so a crash never wedges the cache;
a holder that is stuck alive (SIGSTOPped) is waited on for :data:`STRIPE_WAIT_SECONDS`, after
which the caller goes on without the lock (at worst a second fetch of the same block).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import AsyncIterator

__all__ = ["STRIPE_WAIT_SECONDS", "FlightMap", "stripe_lock"]

STRIPE_WAIT_SECONDS = 30.0
"""Longest wait for another process's fetch of a block: longer than any healthy block fetch
(4 MiB over a 2 Mbit/s link takes 17 s), short enough that a stuck process cannot wedge reads."""


class FlightMap:
    """Digest -> the future of the one fetch in progress for it.

    A flight's result may come before it lands: the leader hands the bytes to its followers
    as soon as they are fetched and lands once they are stored, so a caller that needs the
    block on disk (prefetch) waits for :meth:`landing` too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, concurrent.futures.Future[bytes]] = {}
        self._landings: dict[str, concurrent.futures.Future[None]] = {}

    def join(self, digest: str) -> tuple[concurrent.futures.Future[bytes], bool]:
        """(future, True) for the leader who must fill it, (future, False) for followers."""
        with self._lock:
            future = self._flights.get(digest)
            if future is not None:
                return future, False
            future = concurrent.futures.Future()
            self._flights[digest] = future
            self._landings[digest] = concurrent.futures.Future()
            return future, True

    def landing(self, digest: str) -> concurrent.futures.Future[None] | None:
        """Done when the flight of ``digest`` in progress has landed; None if there is none."""
        with self._lock:
            return self._landings.get(digest)

    def land(self, digest: str) -> None:
        """The leader is done (block stored, or failed): later callers start afresh."""
        with self._lock:
            self._flights.pop(digest, None)
            landed = self._landings.pop(digest, None)
        if landed is not None:
            landed.set_result(None)


@contextlib.asynccontextmanager
async def stripe_lock(
    path: str, *, wait_seconds: float = STRIPE_WAIT_SECONDS
) -> AsyncIterator[bool]:
    """Hold an exclusive flock on ``path``; yields False (unlocked) if the file is unusable or
    another holder kept it longer than ``wait_seconds``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        delay = 0.001
        deadline = time.monotonic() + wait_seconds
        locked = False
        while not locked and time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield locked
    finally:
        os.close(fd)  # closing the descriptor releases the lock
