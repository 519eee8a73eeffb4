"""The link scheduler's rules with injected clocks: foreground first (here and through the
activity file another process touches), the quiet period, the background cap, the windows, the
bound on background in flight; and the priority following a fetch through tasks and loops."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from edgecache.config import CacheSettings, QoSSettings, parse_rate, parse_windows
from edgecache.engine import LinkScheduler, Priority, current_priority, fetch_priority
from edgecache.engine._qos import as_background
from edgecache.errors import ConfigError

KiB, MiB = 1024, 1024 * 1024
LINK = "s3|http://127.0.0.1:1"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scheduler(
    *, wall: float = 0.0, now: float = 100.0, **settings: object
) -> tuple[LinkScheduler, Clock, Clock]:
    wall_clock, clock = Clock(wall), Clock(now)
    made = LinkScheduler(
        LINK,
        QoSSettings(**settings),
        wall_clock=wall_clock,
        clock=clock,  # type: ignore[arg-type]
    )
    return made, wall_clock, clock


def reason(link: LinkScheduler, nbytes: int = 256 * KiB) -> str | None:
    wait = link.admission(nbytes)
    return None if wait is None else wait.reason


async def test_foreground_in_flight_then_the_quiet_period_hold_background() -> None:
    link, _, clock = scheduler(foreground_quiet_seconds=0.5)
    assert reason(link) is None
    with link.request():
        wait = link.admission(KiB)
        assert wait is not None and wait.reason == "foreground" and wait.seconds is None
    clock.now += 0.2
    wait = link.admission(KiB)
    assert wait is not None and wait.reason == "foreground"
    assert wait.seconds == pytest.approx(0.3)
    clock.now += 0.31
    assert reason(link) is None


async def test_background_requests_and_disabled_qos_hold_nothing() -> None:
    link, _, _ = scheduler()
    with link.request(Priority.BACKGROUND):
        assert reason(link) is None
    with fetch_priority(Priority.BACKGROUND), link.request():
        assert reason(link) is None
    off, _, _ = scheduler(enabled=False)
    with off.request():
        async with off.background_block(10 * MiB):
            pass  # admitted at once


def test_only_background_fetches_with_qos_on_take_the_background_slots() -> None:
    link, _, _ = scheduler()
    assert not link.is_background()
    assert link.is_background(Priority.BACKGROUND)
    assert not link.is_background(Priority.FOREGROUND)
    with fetch_priority(Priority.BACKGROUND):
        assert link.is_background()
        off, _, _ = scheduler(enabled=False)
        assert not off.is_background()  # no priorities: the foreground's slots, as before


async def test_a_foreground_burst_lets_no_new_background_block_start() -> None:
    link, _, _ = scheduler(background_inflight_bytes=256 * KiB, foreground_quiet_seconds=0)
    started: list[int] = []
    release = asyncio.Event()

    async def block(i: int) -> None:
        async with link.background_block(256 * KiB):
            started.append(i)
            await release.wait()

    first = asyncio.create_task(block(0))
    await asyncio.sleep(0)
    assert started == [0]
    # Room for one block only: the second waits for the first, then for the burst.
    second = asyncio.create_task(block(1))
    await asyncio.sleep(0)
    assert reason(link) == "in_flight" and started == [0]
    with link.request():
        release.set()
        await first
        for _ in range(10):  # the waiter is woken and looks again (a few loop iterations)
            await asyncio.sleep(0)
        assert started == [0], "a background block started during a foreground request"
    await asyncio.wait_for(second, timeout=5)
    assert started == [0, 1]


@pytest.mark.parametrize("lead", [0.25, 0.0])
async def test_the_next_block_goes_out_in_the_last_lead_of_the_one_on_the_link(lead: float) -> None:
    link, _, clock = scheduler(
        background_inflight_bytes=4 * MiB, background_lead=lead, foreground_quiet_seconds=0
    )
    # Nothing has landed yet: nothing to learn the block time from, one block at a time.
    async with link.background_block(4 * MiB):
        wait = link.admission(4 * MiB)
        assert wait is not None and (wait.reason, wait.seconds) == ("in_flight", None)
        clock.now += 0.4
        link.landed()  # 0.4 s on the link: the block time from now on
        assert reason(link, 4 * MiB) is None
    async with link.background_block(4 * MiB):
        clock.now += 0.2
        wait = link.admission(4 * MiB)
        assert wait is not None and wait.reason == "in_flight"
        if lead == 0:
            assert wait.seconds is None
            clock.now += 0.2
            assert reason(link, 4 * MiB) == "in_flight"
            return
        assert wait.seconds == pytest.approx(0.1)  # 0.75 x 0.4 s after it went on the link
        clock.now += 0.101
        assert reason(link, 4 * MiB) is None
        async with link.background_block(4 * MiB):
            # Two on the link, one in its lead: a third waits for the second's lead.
            wait = link.admission(4 * MiB)
            assert wait is not None and wait.reason == "in_flight"
            assert wait.seconds == pytest.approx(0.3, abs=0.01)
            with link.request():
                assert reason(link, 4 * MiB) == "foreground"


async def test_the_cap_is_paid_with_the_bytes_that_crossed_the_link() -> None:
    link, _, clock = scheduler(background_bytes_per_second=100 * KiB)
    async with link.background_block(100 * KiB):
        with fetch_priority(Priority.BACKGROUND):
            link.charge(100 * KiB)
    wait = link.admission(100 * KiB)
    assert wait is not None and wait.reason == "rate"
    assert wait.seconds == pytest.approx(1.0)
    clock.now += 0.5
    wait = link.admission(100 * KiB)
    assert wait is not None and wait.seconds == pytest.approx(0.5)
    clock.now += 0.5
    assert reason(link) is None
    # A block another fetch brought in (single-flight, a peer) costs nothing.
    async with link.background_block(100 * KiB):
        pass
    assert reason(link) is None
    # An idle link banks nothing: after a long pause the cap still holds from the next block.
    clock.now += 3600
    async with link.background_block(100 * KiB):
        link.charge(100 * KiB, Priority.BACKGROUND)
    assert reason(link) == "rate"


async def test_windows_pause_or_uncap_background_by_utc_time() -> None:
    day = 20 * 86400.0
    link, wall, _ = scheduler(
        wall=day + 1.5 * 3600,  # 01:30 UTC
        background_bytes_per_second=0,
        background_windows=parse_windows("02:00-03:00"),
    )
    wait = link.admission(KiB)
    assert wait is not None and wait.reason == "window"
    assert wait.seconds == pytest.approx(1800)
    wall.now = day + 2 * 3600  # 02:00: inside, uncapped
    async with link.background_block(MiB):
        link.charge(MiB, Priority.BACKGROUND)
    assert reason(link) is None
    wall.now = day + 3 * 3600  # 03:00: the window is over
    assert reason(link) == "window"

    capped, wall, _ = scheduler(
        wall=day + 12 * 3600,
        background_bytes_per_second=MiB,
        background_windows=parse_windows("22:00-06:00"),
        window_bytes_per_second=None,
    )
    async with capped.background_block(MiB):
        capped.charge(MiB, Priority.BACKGROUND)
    assert reason(capped) == "rate"  # noon: capped
    wall.now = day + 23 * 3600  # 23:00, inside the window that wraps past midnight
    assert reason(capped) is None


async def test_windows_are_waited_for_then_recheck_lets_them_go(tmp_path: Path) -> None:
    wall = Clock(10 * 86400 + 3600.0)  # 01:00
    link = LinkScheduler(
        LINK,
        QoSSettings(background_bytes_per_second=0, background_windows=parse_windows("02:00-03:00")),
        wall_clock=wall,
    )
    entered = asyncio.Event()

    async def block() -> None:
        async with link.background_block(KiB):
            entered.set()

    task = asyncio.create_task(block())
    await asyncio.sleep(0)  # the task runs up to its wait
    assert not entered.is_set() and reason(link) == "window"
    wall.now += 3600
    threading.Thread(target=link.recheck).start()
    await asyncio.wait_for(entered.wait(), timeout=0.9)  # before the 1 s safety re-look
    await task


async def test_another_process_foreground_is_seen_through_the_activity_file(
    tmp_path: Path,
) -> None:
    # Two schedulers of one link sharing a directory, as two processes on a node do.
    reader = LinkScheduler(LINK, QoSSettings(foreground_quiet_seconds=30))
    loader = LinkScheduler(LINK, QoSSettings(foreground_quiet_seconds=30))
    other = LinkScheduler("s3|http://elsewhere:1", QoSSettings(foreground_quiet_seconds=30))
    for link in (reader, loader, other):
        link.share_through(str(tmp_path / "qos"))
    assert reason(loader) is None
    with reader.request():
        pass
    wait = loader.admission(KiB)
    assert wait is not None and wait.reason == "foreground" and 29 < (wait.seconds or 0) <= 30
    assert reason(other) is None, "another link's foreground held this one back"
    assert len(list((tmp_path / "qos").iterdir())) == 1


async def test_the_priority_follows_fetches_into_tasks_and_other_loops() -> None:
    assert current_priority() is Priority.FOREGROUND

    @as_background
    async def load() -> list[Priority]:
        seen = [current_priority()]
        seen.append(await asyncio.create_task(_priority_now()))
        other = asyncio.new_event_loop()
        thread = threading.Thread(target=other.run_forever)
        thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(_priority_now(), other)
            seen.append(await asyncio.wrap_future(future))
        finally:
            other.call_soon_threadsafe(other.stop)
            thread.join()
            other.close()
        return seen

    assert await load() == [Priority.BACKGROUND] * 3
    assert current_priority() is Priority.FOREGROUND


async def _priority_now() -> Priority:
    return current_priority()


def test_peer_header_values() -> None:
    assert Priority.from_header("background") is Priority.BACKGROUND
    assert Priority.from_header(" Background ") is Priority.BACKGROUND
    for value in (None, "", "foreground", "urgent"):
        assert Priority.from_header(value) is Priority.FOREGROUND


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10MiB", 10 * MiB),
        ("10MiB/s", 10 * MiB),
        ("80Mbit", 10_000_000),
        ("1Gbit/s", 125_000_000),
        ("500K", 500_000),
        ("0", 0),
        (2048, 2048),
        ("unlimited", None),
        (None, None),
    ],
)
def test_rates(text: object, expected: float | None) -> None:
    assert parse_rate(text, option="background_rate") == expected


@pytest.mark.parametrize("bad", ["fast", "10 MiB/h", "-1MiB", "1e3", True])
def test_bad_rates_name_the_option(bad: object) -> None:
    with pytest.raises(ConfigError, match="background_rate"):
        parse_rate(bad, option="background_rate")


@pytest.mark.parametrize("bad", ["2-6", "02:00-02:00", "25:00-26:00", "02:00-06:61", "x", 5])
def test_bad_windows_name_the_option(bad: object) -> None:
    with pytest.raises(ConfigError, match="background_windows"):
        parse_windows(bad, option="background_windows")


def test_qos_storage_options() -> None:
    settings = CacheSettings.from_options(
        {
            "qos_enabled": "false",
            "background_rate": "20MiB/s",
            "background_windows": "22:00-06:00, 12:00-13:00",
            "background_window_rate": "unlimited",
            "background_inflight": "8MiB",
            "background_fetches": "4",
            "foreground_quiet": "0.25",
        }
    )
    qos = settings.qos
    assert not qos.enabled and qos.background_bytes_per_second == 20 * MiB
    assert [str(w) for w in qos.background_windows] == ["12:00-13:00", "22:00-06:00"]
    assert qos.window_bytes_per_second is None
    assert (qos.background_inflight_bytes, qos.background_fetches) == (8 * MiB, 4)
    assert qos.foreground_quiet_seconds == 0.25
    assert settings.as_dict()["background_windows"] == ["12:00-13:00", "22:00-06:00"]
    with pytest.raises(ConfigError, match="qos_enabled"):
        CacheSettings.from_options({"qos_enabled": "maybe"})
