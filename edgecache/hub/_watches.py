"""Open watch streams, so that an online/offline switch can end them all (design 2.6).

YurtHub left watches hanging across a switch and clients silently missed events. Here every
watch the hub serves, proxied or offline, registers a handle; :meth:`WatchRegistry.close_all`
ends each one cleanly (the chunked response is finished), and the client re-lists and re-watches
against whatever mode the hub is now in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["WatchHandle", "WatchRegistry"]


class WatchHandle:
    """One open watch. ``closed`` is set when the hub wants the stream ended."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.on_close: Callable[[], None] | None = None

    def close(self) -> None:
        self.closed.set()
        if self.on_close is not None:
            self.on_close()


class WatchRegistry:
    """The set of open watches."""

    def __init__(self) -> None:
        self._open: set[WatchHandle] = set()
        #: How many watches were ended by a mode switch (for tests and metrics).
        self.closed_by_switch = 0

    def __len__(self) -> int:
        return len(self._open)

    @contextmanager
    def register(self) -> Iterator[WatchHandle]:
        handle = WatchHandle()
        self._open.add(handle)
        try:
            yield handle
        finally:
            self._open.discard(handle)

    def close_all(self) -> int:
        handles = list(self._open)
        for handle in handles:
            handle.close()
        self.closed_by_switch += len(handles)
        return len(handles)
