"""Background block fetches have request slots of their own: a prefetch of many small objects
keeps ``background_fetches`` requests in flight (more than ``fetch_concurrency``, which small
objects need to fill a link: each costs round trips, not bandwidth), and a reader's requests
still go out at once, however many of those are in flight.

The link's round trip is made long here (1 s), so that every request stays in flight long
enough for the counts taken at each request's start to be the state of the link; the counts
are what is asserted, never a time. Before background had slots of its own, it shared the
foreground's: at most ``fetch_concurrency`` requests of both together were ever in flight.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from edgecache_testservers.wan import WANProfile
from qoslib import BLOCK, KiB, Load, Site, cache_options, make_fs

from edgecache.engine import Priority, current_priority

# Runs alone (conftest.py): request slots measured while the link is busy.
pytestmark = pytest.mark.exclusive

FOREGROUND_SLOTS = 2
BACKGROUND_FETCHES = 6
SMALL_FILES = 18
SMALL_BYTES = 16 * KiB


class InFlight:
    """Counts the backend's range requests in flight by priority, wrapped around the engine's
    backend (the real one, unchanged otherwise); notes the counts at each request's start."""

    def __init__(self, fetch_range: Callable[..., Awaitable[bytes]]) -> None:
        self._fetch_range = fetch_range
        self.now: Counter[Priority] = Counter()
        self.most: Counter[Priority] = Counter()
        self.at_foreground_starts: list[tuple[int, int]] = []
        """(foreground, background) in flight as each foreground request started."""
        self.background_full = threading.Event()

    async def __call__(self, *args: object, **kwargs: object) -> bytes:
        priority = current_priority()
        self.now[priority] += 1
        self.most[priority] = max(self.most[priority], self.now[priority])
        if priority is Priority.FOREGROUND:
            self.at_foreground_starts.append(
                (self.now[Priority.FOREGROUND], self.now[Priority.BACKGROUND])
            )
        elif self.now[priority] >= BACKGROUND_FETCHES:
            self.background_full.set()
        try:
            return await self._fetch_range(*args, **kwargs)
        finally:
            self.now[priority] -= 1


def test_background_has_request_slots_of_its_own(site: Site, tmp_path: Path) -> None:
    for i in range(SMALL_FILES):
        site.put(f"small/f{i:02d}.bin", os.urandom(SMALL_BYTES))
    site.put("reader.bin", reader_data := os.urandom(FOREGROUND_SLOTS * BLOCK))
    fs = make_fs(
        site,
        cache_options(
            str(tmp_path / "cache"),
            fetch_concurrency=FOREGROUND_SLOTS,
            background_fetches=BACKGROUND_FETCHES,
        ),
    )
    engine = fs.engine
    plan = engine.run(engine.plan(f"{site.bucket}/reader.bin", block_size=BLOCK, ttl=60))
    counts = InFlight(engine.backend.fetch_range)
    engine.backend.fetch_range = counts  # type: ignore[method-assign]
    site.wan.set_profile(WANProfile(rtt_ms=1000, mbit=10))
    # The prefetch's default number of workers: enough to fill the background slots.
    with Load(fs, site.url("small"), parallel=None) as load:
        assert counts.background_full.wait(60), (
            f"background never had {BACKGROUND_FETCHES} requests in flight: {counts.most}"
        )
        data = engine.run(engine.read(plan, 0, plan.size))  # both blocks at once
        report = load.wait()
    assert data == reader_data
    assert report.ok and report.bytes_loaded == SMALL_FILES * SMALL_BYTES
    # Background filled its own slots, never more, and never took the foreground's: both of
    # the reader's requests went out while background held more than the foreground has.
    assert counts.most[Priority.BACKGROUND] == BACKGROUND_FETCHES
    assert counts.most[Priority.FOREGROUND] <= FOREGROUND_SLOTS
    assert len(counts.at_foreground_starts) == FOREGROUND_SLOTS
    assert all(
        foreground + background > FOREGROUND_SLOTS
        for foreground, background in counts.at_foreground_starts
    ), f"(foreground, background) in flight at the reader's requests: {counts.at_foreground_starts}"
