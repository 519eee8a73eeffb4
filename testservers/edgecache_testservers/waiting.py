"""Waiting in tests for something another process or thread makes true.

Tests of the hub, controller and agent watch a server converge: an object appears, a status
moves, a file lands in a view. They poll a probe until it returns something truthy, with one
deadline and one failure message naming what was awaited and the last thing seen (a value or
the exception the probe raised, e.g. a 404 while the object does not exist yet). The sync and
async forms differ only in how they sleep between attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["eventually", "wait_for"]

T = TypeVar("T")


class _Poll:
    """One probe, its deadline, and the last value it gave."""

    def __init__(self, probe: Callable[[], Any], timeout_seconds: float, what: str) -> None:
        self.probe = probe
        self.deadline = time.monotonic() + timeout_seconds
        self.what = what
        self.last: Any = None

    def attempt(self) -> bool:
        try:
            self.last = self.probe()
        except Exception as exc:  # e.g. 404 while the object does not exist yet
            self.last = exc
            return False
        return bool(self.last)

    def pending(self) -> bool:
        return time.monotonic() < self.deadline

    def timed_out(self) -> AssertionError:
        awaited = self.what or self.probe
        return AssertionError(f"timed out waiting for {awaited}: last {self.last!r}")


def wait_for(probe: Callable[[], T | None], *, timeout_seconds: float = 20.0, what: str = "") -> T:
    """The first truthy value of ``probe()``; fails with the last value after the timeout."""
    poll = _Poll(probe, timeout_seconds, what)
    while poll.pending():
        if poll.attempt():
            return poll.last  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise poll.timed_out()


async def eventually(
    probe: Callable[[], T | None], *, timeout_seconds: float = 10.0, what: str = ""
) -> T:
    """Like :func:`wait_for`, sleeping on the running event loop between attempts."""
    poll = _Poll(probe, timeout_seconds, what)
    while poll.pending():
        if poll.attempt():
            return poll.last  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise poll.timed_out()
