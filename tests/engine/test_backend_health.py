"""BackendHealth on its own: when an offline backend is probed, how many probes run, when it is
online and stable again. A fake clock stands for time; probes are coroutines the test controls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

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
    """A probe whose answer the test sets; counts the probes."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0
        self.hold: asyncio.Event | None = None

    async def probe(self) -> None:
        self.probes += 1
        if self.hold is not None:
            await self.hold.wait()
        if not self.up:
            raise ConnectionError("link down")


def offline_health(clock: Clock, **periods: float) -> BackendHealth:
    settings = HealthSettings(
        probe_interval_seconds=periods.get("probe_interval_seconds", 60.0),
        recheck_after_seconds=periods.get("recheck_after_seconds", 1.0),
        stable_after_seconds=periods.get("stable_after_seconds", 30.0),
    )
    health = BackendHealth("test|health", settings, clock=clock)
    health.went_unreachable(ConnectionError("connection refused"))
    return health


async def test_a_read_probes_only_once_the_last_probe_is_old_enough() -> None:
    clock, link = Clock(), Link()
    health = offline_health(clock)
    assert not health.online
    # Going offline counts as a probe: a read right after it fails at once, asking nothing.
    assert not await health.usable(link.probe)
    assert link.probes == 0
    clock.now += 0.5
    assert not await health.usable(link.probe)
    assert link.probes == 0
    clock.now += 0.6
    assert not await health.usable(link.probe)  # due: probed, still down
    assert link.probes == 1
    assert not await health.usable(link.probe)  # not due again yet
    assert link.probes == 1

    link.up = True
    clock.now += 1.0
    assert await health.usable(link.probe)  # the link is back: this very read may go
    assert link.probes == 2
    assert health.online
    assert await health.usable(link.probe)
    assert link.probes == 2  # online: no probe per read


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


async def test_a_dead_link_costs_at_most_one_probe_per_recheck_period() -> None:
    clock, link = Clock(), Link()
    health = offline_health(clock, recheck_after_seconds=1.0)
    for _ in range(100):  # 100 reads over 10 s of fake time
        clock.now += 0.1
        assert not await health.usable(link.probe)
    assert 9 <= link.probes <= 10


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
