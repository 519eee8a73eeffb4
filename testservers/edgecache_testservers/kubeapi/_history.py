"""The event log: one global resourceVersion, the bounded history of changes, waiting watches.

Every write the store commits takes the next resourceVersion and appends exactly one event, so
the event for resourceVersion ``r`` is found by position and ``events_after(N)`` is exactly what a
watch from ``N`` must replay. Events that fall out of the bounded window raise the compaction
mark: a watch or an exact list from before it gets 410 Gone, as after an etcd compaction.
Waiting watches are woken through their own event loop, so a test thread may write while the
server's loop serves. Not locked itself: the store calls it under the store's lock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class StoredEvent:
    """One committed change; ``old`` is the previous state (for selector transitions in watches)."""

    resource_version: int
    type: str  # ADDED, MODIFIED or DELETED
    group_resource: tuple[str, str]
    namespace: str
    object: JSONObject
    old: JSONObject | None


class EventHistory:
    """The global resourceVersion, the last ``size`` events, and who to wake on a new one."""

    def __init__(self, size: int) -> None:
        self.resource_version = 0
        """The latest committed resourceVersion."""
        self.compacted = 0
        """Replay is possible from any resourceVersion at or above this one."""
        self._size = size
        self._events: deque[StoredEvent] = deque()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._quiet = 0

    def next_version(self) -> int:
        """Take the next resourceVersion for a write about to be appended."""
        self.resource_version += 1
        return self.resource_version

    def append(self, event: StoredEvent) -> None:
        self._events.append(event)
        while len(self._events) > self._size:
            self.compacted = self._events.popleft().resource_version
        self.notify()

    def after(self, resource_version: int) -> tuple[list[StoredEvent], int] | None:
        """Events after ``resource_version`` and the version they reach; ``None`` if compacted."""
        if resource_version < self.compacted:
            return None
        if resource_version >= self.resource_version:
            return [], self.resource_version
        first = self._events[0].resource_version if self._events else self.resource_version + 1
        start = max(0, resource_version + 1 - first)
        events = list(itertools.islice(self._events, start, None))
        if events and start and events[0].resource_version != resource_version + 1:
            # The one-event-per-version shortcut does not hold: fall back to a scan.
            events = [e for e in self._events if e.resource_version > resource_version]
        return events, self.resource_version

    def compact(self) -> None:
        """Forget every event, as an etcd compaction at the current revision does."""
        self._events.clear()
        self.compacted = self.resource_version

    # ------------------------------------------------------------------------------ waiters

    def add_waiter(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._waiters.add((loop, event))

    def remove_waiter(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._waiters.discard((loop, event))

    def hold(self) -> None:
        """Stop waking watches (a bulk write is under way) until :meth:`release`."""
        self._quiet += 1

    def release(self) -> None:
        self._quiet -= 1
        self.notify()

    def notify(self) -> None:
        if self._quiet:
            return
        for loop, event in list(self._waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its watch is gone
                self._waiters.discard((loop, event))
