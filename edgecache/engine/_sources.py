"""Block sources: where the read engine gets a block the cache tiers do not hold.

Place in the data path::

    ReadEngine._block --> TieredCache (MEM, SSD, single-flight) --miss--> sources, in order:
        [pool peers (edgecache.pool, to come), ...] --> BackendSource (the object store)

A source either returns the block's bytes or raises :class:`SourceSkipped` ("not from me, not
now": a peer that does not hold it or did not answer in time), and the next source is asked.
The backend is always last and never skips: its errors are the reader's errors. Sources are
added with :meth:`ReadEngine.add_source`, so the pool plugs in without editing the read path.
When the backend is unreachable, a source that also has ``fetch_held(plan, index)`` (bytes
only if it holds them somewhere, else SourceSkipped: the pool asks every live peer) is asked
once more before the reader gets the error.
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import TYPE_CHECKING, Any, Protocol

from edgecache.engine._plan import ReadPlan
from edgecache.errors import ObjectChangedError
from edgecache.metrics import BACKEND_BYTES, BACKEND_FETCH_SECONDS

if TYPE_CHECKING:
    from edgecache.engine._engine import ReadEngine

__all__ = ["BackendSource", "BlockSource", "SourceSkipped"]


class SourceSkipped(Exception):
    """A source cannot serve this block now; the engine asks the next one."""


class BlockSource(Protocol):
    """Something that can fetch one block of a planned read."""

    name: str
    """Short name for logs and metrics (``backend``, ``peer``)."""

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        """Bytes of block ``index`` of ``plan`` (exactly ``plan.block_length(index)`` of them),
        or :class:`SourceSkipped`. Runs on the engine's event loop."""
        ...


class BackendSource:
    """The object store itself, behind the engine's health guard and fetch concurrency bound."""

    name = "backend"

    def __init__(
        self, engine: ReadEngine, *, concurrency: int, background_concurrency: int
    ) -> None:
        self._engine = engine
        self._slots = asyncio.Semaphore(concurrency)
        """At most ``concurrency`` block requests in flight for the whole engine (the node's
        link is shared by every filesystem of the process)."""
        self._background_slots = asyncio.Semaphore(background_concurrency)
        """Background blocks' own request slots (WAN QoS on): they never take the
        foreground's, so a reader's request never queues behind a prefetch's, however many
        of those are in flight. The link scheduler admits no more background blocks than
        there are of these, so an admitted block does not wait here either."""
        self._span_slots = asyncio.Semaphore(4 * concurrency)
        """Spans (the pages of sparse reads) have their own, wider bound: a few KiB each,
        they cost the link a round trip, not its bandwidth, and a ``cat_ranges`` of a few dozen
        ranges should not wait for one another (or for blocks)."""

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        start = plan.block_start(index)
        slots = self._background_slots if self._engine.link.is_background() else self._slots
        async with self._engine.guard(f"block {index} of {plan.path}"), slots:
            data = await self._engine.backend.fetch_range(
                plan.path, start, start + plan.block_length(index), plan.version
            )
        self._engine.link.charge(len(data))
        self._engine.link.landed()
        return data

    async def fetch_span(self, plan: ReadPlan, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the planned version that are no whole block (the pages of
        a sparse read), under the same guard and bound; counted as backend bytes.
        ObjectChangedError if they come back with another length."""
        backend = self._engine.backend
        label = self._engine.identity.split("|", 1)[0]
        started = time.perf_counter()
        async with self._engine.guard(f"bytes {start}-{end} of {plan.path}"), self._span_slots:
            data = await backend.fetch_range(plan.path, start, end, plan.version)
        BACKEND_FETCH_SECONDS.labels(label).observe(time.perf_counter() - started)
        BACKEND_BYTES.labels(label).inc(len(data))
        self._engine.link.charge(len(data))
        if len(data) != end - start:
            raise ObjectChangedError(
                errno.ESTALE,
                f"{plan.path}: bytes {start}-{end} came back as {len(data)} bytes; the object "
                "changed while it was read",
            )
        return bytes(data)

    async def fetch_unplanned(
        self, path: str, start: int, end: int, *, counted: bool
    ) -> tuple[bytes, dict[str, Any]]:
        """Bytes ``[start, end)`` of the current version of ``path`` and its info, from one
        request (no version to check: nothing is known of the object yet), under the guard
        and the span bound; ``counted``: count them as backend bytes here (a caller storing
        them as a block has :class:`~edgecache.cache.TieredCache` count them)."""
        backend = self._engine.backend
        label = self._engine.identity.split("|", 1)[0]
        started = time.perf_counter()
        async with self._engine.guard(f"bytes {start}-{end} of {path}"), self._span_slots:
            data, info = await backend.fetch_range_and_info(path, start, end)
        self._engine.link.charge(len(data))
        if counted:
            BACKEND_FETCH_SECONDS.labels(label).observe(time.perf_counter() - started)
            BACKEND_BYTES.labels(label).inc(len(data))
        return bytes(data), info
