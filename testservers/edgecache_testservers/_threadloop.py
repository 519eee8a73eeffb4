"""The lifecycle every in-process test service shares (Kubernetes API, OSS, WAN emulator).

A service implements ``astart()``/``astop()`` on asyncio. Tests then use it two ways:
``async with service:`` on the test's own event loop, or ``with service:`` (``start()``,
``close()``), which runs it on an event loop of its own in a daemon thread, for synchronous
clients (the ``kubernetes`` client, ``ossfs``, ``kubectl`` or ``edgecache`` subprocesses).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["LoopThreadService"]

T = TypeVar("T")


class LoopThreadService:
    """Base class: async lifecycle plus a background-thread event loop for sync use."""

    thread_name = "edgecache-test-service"
    """Name of the background thread (shows in thread dumps of a hung test)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def astart(self) -> None:
        """Start serving on the running loop (subclasses set ``self._loop`` to it)."""
        raise NotImplementedError

    async def astop(self) -> None:
        """Stop serving."""
        raise NotImplementedError

    @property
    def threaded(self) -> bool:
        """Whether the service runs on its own thread's loop."""
        return self._thread is not None

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        if self._thread is not None and self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self.thread_name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        return loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the service's own thread loop and wait for it (60 s at most)."""
        if self._loop is not None and self._thread is None:
            coroutine.close()
            raise RuntimeError(
                f"{type(self).__name__} runs on your event loop: use its async methods"
            )
        loop = self._ensure_thread()
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    def start(self) -> None:
        """Start serving from a background thread with its own event loop."""
        self._run(self.astart())

    def close(self) -> None:
        """Stop serving and end the background thread (state kept only until then)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._run(self.astop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop, self._thread = None, None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()
