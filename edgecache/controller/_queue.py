"""Queueing: which objects to reconcile next, each at most once at a time, with backoff.

The stage between observation and reconciling (client-go's rate-limited work queue, in
asyncio): a key added while queued is queued once; a key added while a worker reconciles it is
reconciled again after that worker is done (never by two workers at once); a failed key comes
back after ``base * 2**(failures-1)`` seconds, capped, and :meth:`WorkQueue.forget` resets its
count once it succeeds. A bad object therefore costs at most one attempt per backoff period and
never blocks the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable

from edgecache.metrics import CONTROLLER_QUEUE_DEPTH

__all__ = ["WorkQueue"]


class WorkQueue:
    """Keys to reconcile, FIFO, deduplicated, one worker per key at a time."""

    def __init__(self, *, base_delay_seconds: float = 0.5, max_delay_seconds: float = 300.0):
        self.base_delay_seconds = base_delay_seconds
        self.max_delay_seconds = max_delay_seconds
        self._queue: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: Hashable) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._ready.set()
        CONTROLLER_QUEUE_DEPTH.set(len(self._queue))

    def add_after(self, key: Hashable, delay_seconds: float) -> None:
        """Add ``key`` in ``delay_seconds`` (an earlier pending add of it wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_seconds
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: Hashable) -> float:
        """Schedule ``key`` again after its next backoff delay; returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self.base_delay_seconds * 2.0 ** (failures - 1), self.max_delay_seconds)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Hashable:
        """The next key; the caller must call :meth:`done` with it."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        CONTROLLER_QUEUE_DEPTH.set(len(self._queue))
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
