"""BackendHealth on its own: when an offline backend is probed, how many probes run, when it is
online and stable again. A fake clock stands for time; probes are coroutines the test controls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable

import pytest

from edgecache.config import CacheSettings, HealthSettings
from edgecache.engine._health import BackendHealth
from edgecache.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Link:
    """A probe whose answer the test sets; counts the probes. With a ``clock``, a probe of a
    link that is down hangs: it takes ``hang_seconds`` of the clock, then times out."""

    def __init__(self, clock: Clock | None = None, hang_seconds: float = 0.0) -> None:
        self.up = False
        self.probes = 0
        self.started: list[float] = []
        self.hold: asyncio.Event | None = None
        self.clock = clock
        self.hang_seconds = hang_seconds

    async def probe(self) -> None:
        self.probes += 1
        if self.clock is not None:
            self.started.append(self.clock.now)
        if self.hold is not None:
            await self.hold.wait()
        if not self.up:
            if self.clock is not None and self.hang_seconds:
                self.clock.now += self.hang_seconds
                raise TimeoutError("no answer")
            raise ConnectionError("link down")


def offline_health(clock: Clock, *, hung: bool = False, **periods: float) -> BackendHealth:
    """A backend that went offline by a refused connection, or by a timeout (``hung``)."""
    settings = HealthSettings(
        probe_interval_seconds=periods.get("probe_interval_seconds", 60.0),
        recheck_after_seconds=periods.get("recheck_after_seconds", 1.0),
        stable_after_seconds=periods.get("stable_after_seconds", 30.0),
    )
    health = BackendHealth("test|health", settings, clock=clock)
    if hung:
        health.went_unreachable(TimeoutError("read timed out"))
    else:
        health.went_unreachable(ConnectionError("connection refused"))
    return health


async def test_a_read_probes_only_once_the_last_probe_is_old_enough() -> None:
    clock = Clock()
    link = Link(clock, hang_seconds=0.6)  # a hung link: every probe waits for its timeout
    health = offline_health(clock, hung=True)
    assert not health.online
    # Going offline counts as a probe: a read right after it fails at once, asking nothing.
    assert not await health.usable(link.probe)
    assert link.probes == 0
    clock.now += 0.5
    assert not await health.usable(link.probe)
    assert link.probes == 0
    clock.now += 0.6
    assert not await health.usable(link.probe)  # due: probed, timed out
    assert link.probes == 1
    assert not await health.usable(link.probe)  # not due again yet (0.6 s after that probe)
    assert link.probes == 1

    link.up = True
    clock.now += 1.0
    assert await health.usable(link.probe)  # the link is back: this very read may go
    assert link.probes == 2
    assert health.online
    assert await health.usable(link.probe)
    assert link.probes == 2  # online: no probe per read


async def test_a_request_that_fails_while_offline_counts_as_a_probe() -> None:
    # A hung link: a request sent before the backend went offline waits out its own read
    # timeout and fails later. The read it served then falls back to the cache at once: its
    # failure is as fresh as a probe, and a probe now would cost that read another timeout.
    clock = Clock()
    link = Link(clock, hang_seconds=3.0)
    health = offline_health(clock, hung=True, recheck_after_seconds=1.0)
    clock.now += 2.5
    health.went_unreachable(TimeoutError("read timed out"))
    assert not await health.usable(link.probe)
    assert link.probes == 0
    clock.now += 1.1  # a period after that failure: a read probes again
    assert not await health.usable(link.probe)
    assert link.probes == 1
    # A refused request while offline: the link fails at once now, so a probe is due sooner.
    clock.now += 0.1
    health.went_unreachable(ConnectionRefusedError("connection refused"))
    clock.now += 0.3
    link.hang_seconds = 0.0
    assert not await health.usable(link.probe)
    assert link.probes == 2


def test_watchers_hear_of_the_going_offline_once_until_they_stop_watching() -> None:
    health = BackendHealth("test|health", HealthSettings(), clock=Clock())
    heard: list[str] = []
    stop_first = health.on_offline(lambda: heard.append("first"))
    health.on_offline(lambda: heard.append("second"))
    stop_first()
    health.went_unreachable(TimeoutError("read timed out"))
    health.went_unreachable(TimeoutError("read timed out"))  # already offline: nothing new
    assert heard == ["second"]


async def test_concurrent_reads_share_one_probe() -> None:
    clock, link = Clock(), Link()
    health = offline_health(clock)
    clock.now += 5
    link.up = True
    link.hold = asyncio.Event()
    reads = [asyncio.ensure_future(health.usable(link.probe)) for _ in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert link.probes == 1
    link.hold.set()
    assert await asyncio.gather(*reads) == [True] * 50
    assert link.probes == 1


async def test_a_hung_link_costs_at_most_one_probe_per_recheck_period() -> None:
    clock = Clock()
    link = Link(clock, hang_seconds=0.5)
    health = offline_health(clock, hung=True, recheck_after_seconds=1.0)
    for _ in range(100):  # 100 reads, 0.1 s apart
        clock.now += 0.1
        assert not await health.usable(link.probe)
    gaps = [b - a for a, b in zip(link.started, link.started[1:], strict=False)]
    assert len(link.started) >= 6 and min(gaps) >= 1.0


async def test_a_link_that_refuses_at_once_is_probed_every_quarter_period() -> None:
    """Refusals cost a round trip, not a wait: a read probes a quarter period after the last
    probe, so a link that comes back is used within about that."""
    clock = Clock()
    link = Link(clock)
    health = offline_health(clock, recheck_after_seconds=1.0)
    for _ in range(100):
        clock.now += 0.1
        assert not await health.usable(link.probe)
    gaps = [b - a for a, b in zip(link.started, link.started[1:], strict=False)]
    assert 30 <= len(link.started) <= 34 and min(gaps) >= 0.25
    link.up = True
    clock.now += 0.3
    assert await health.usable(link.probe)
    # A request that timed out (not a probe) makes the next probe wait the whole period.
    health.went_unreachable(TimeoutError("read timed out"))
    clock.now += 0.5
    assert not await health.usable(link.probe) and link.probes == len(link.started)
    probes = link.probes
    clock.now += 0.6
    assert await health.usable(link.probe) and link.probes == probes + 1


async def test_a_reader_that_gives_up_does_not_cancel_the_shared_probe() -> None:
    clock, link = Clock(), Link()
    health = offline_health(clock)
    clock.now += 5
    link.up = True
    link.hold = asyncio.Event()
    impatient = asyncio.ensure_future(health.usable(link.probe))
    patient = asyncio.ensure_future(health.usable(link.probe))
    await asyncio.sleep(0)
    impatient.cancel()
    link.hold.set()
    assert await patient
    assert health.online


async def test_a_probe_on_another_event_loop_is_shared() -> None:
    clock, link = Clock(), Link()
    health = offline_health(clock)
    clock.now += 5
    link.up = True
    started, release = threading.Event(), threading.Event()

    async def held_probe() -> None:
        link.probes += 1
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        other = pool.submit(asyncio.run, health.usable(held_probe))
        assert await asyncio.to_thread(started.wait, 5)
        here = asyncio.ensure_future(health.usable(link.probe))
        await asyncio.sleep(0.05)
        assert not here.done()  # joined the other loop's probe instead of starting one
        release.set()
        assert await here
        assert other.result(timeout=5)
    assert link.probes == 1


async def test_after_an_outage_the_backend_is_online_but_not_stable_for_a_while() -> None:
    clock, link = Clock(), Link()
    settings = HealthSettings(recheck_after_seconds=1.0, stable_after_seconds=30.0)
    health = BackendHealth("test|health", settings, clock=clock)
    assert health.online and health.stable  # never offline: stable
    health.went_unreachable(TimeoutError("read timed out"))
    assert not health.stable
    assert "unreachable since" in health.describe()
    assert "read timed out" in health.describe()
    link.up = True
    clock.now += 2
    assert await health.usable(link.probe)
    assert health.online and not health.stable
    clock.now += 29
    assert not health.stable
    # It flaps: down again, back again; the 30 s start over from the last recovery.
    health.went_unreachable(TimeoutError("read timed out again"))
    clock.now += 2
    assert await health.usable(link.probe)
    clock.now += 29
    assert not health.stable
    clock.now += 2
    assert health.stable
    assert health.describe() == "online"


async def test_the_message_names_the_first_error_once() -> None:
    clock = Clock()
    health = offline_health(clock)
    health.went_unreachable(ConnectionError("a later failure"))
    clock.now += 12
    text = health.describe()
    assert text.count("connection refused") == 1
    assert "a later failure" not in text
    assert "(12 s;" in text


async def test_the_background_probe_brings_the_backend_back_when_nothing_reads() -> None:
    probed = asyncio.Event()

    async def probe() -> None:
        probed.set()

    health = BackendHealth("test|health", HealthSettings(probe_interval_seconds=0.05))
    health.went_unreachable(ConnectionError("refused"), probe)
    assert not health.online
    async with asyncio.timeout(5):
        await probed.wait()
    for _ in range(3):
        await asyncio.sleep(0)  # the probe's task finishes its step
    assert health.online


@pytest.mark.parametrize("value", [-1, "soon", float("nan")])
def test_the_periods_are_checked(value: object) -> None:
    with pytest.raises(ConfigError, match="backend_recheck_after"):
        CacheSettings.from_options({"backend_recheck_after": value})


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 5 s: {what}")


async def test_stopped_probing_ends_the_background_probe_and_a_read_still_probes() -> None:
    # What the registry does before closing a backend's client (replaced engine, exit): a
    # background probe after the close would open the client's session again, left unclosed.
    clock, link = Clock(), Link()
    settings = HealthSettings(probe_interval_seconds=0.05)
    health = BackendHealth("test|health", settings, clock=clock)
    health.went_unreachable(ConnectionError("connection refused"), link.probe)
    await _until(lambda: link.probes >= 2, "the background probe runs while offline")
    hold = link.hold = asyncio.Event()  # the next probe hangs in flight
    before = link.probes
    await _until(lambda: link.probes > before, "a probe in flight")
    health.stop_probing()
    hold.set()  # a probe left running would now fail, and the background one probe again
    await asyncio.sleep(0.3)  # six probe periods
    assert link.probes == before + 1, "probed after stop_probing"
    health.went_unreachable(ConnectionError("connection refused"), link.probe)
    await asyncio.sleep(0.3)
    assert link.probes == before + 1, "the background probe started again"
    assert not health.online
    link.hold, link.up = None, True
    clock.now += 5
    assert await health.usable(link.probe)  # a read that needs the backend still probes it
    assert health.online and link.probes == before + 2
