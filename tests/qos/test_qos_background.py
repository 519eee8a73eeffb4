"""Background loading on the thin WAN link: a foreground burst pauses it within one block, its
cap holds over time, its time windows are kept (the wall clock injected), and the WAN bytes
are counted by priority. With ``EDGECACHE_TEST_QOS=off`` the first two fail."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from qoslib import BLOCK, KiB, Load, Site, cache_options, make_fs, wan_bytes

from edgecache.engine import ReadPlan

# Runs alone (conftest.py): rates and pauses measured on the clock.
pytestmark = pytest.mark.exclusive


def put_files(site: Site, prefix: str, count: int, blocks: int) -> int:
    for i in range(count):
        site.put(f"{prefix}/part{i:02d}.bin", os.urandom(blocks * BLOCK))
    return count * blocks * BLOCK


def test_a_foreground_burst_pauses_background_within_one_block(site: Site, tmp_path: Path) -> None:
    total = put_files(site, "load", 8, 2)
    site.put("burst.bin", burst_data := os.urandom(4 * BLOCK))
    fs = make_fs(site, cache_options(str(tmp_path / "cache")))
    engine = fs.engine
    plan = engine.run(engine.plan(f"{site.bucket}/burst.bin", block_size=BLOCK, ttl=60))
    foreground_before = wan_bytes("foreground")

    async def burst(plan: ReadPlan) -> tuple[float, float, bytes]:
        # The burst starts with its first request counted (the reads below count their own):
        # the background bytes read next are those that landed while foreground was on.
        with engine.link.request():
            before = wan_bytes("background")
            data = await engine.read(plan, 0, plan.size)  # four blocks at once
            return before, wan_bytes("background"), data

    with Load(fs, site.url("load")) as load:
        assert load.loading.wait(60), "the DataLoad never started"
        before, after, data = engine.run(burst(plan))
        report = load.wait()
    assert data == burst_data
    assert after - before <= BLOCK, (
        f"{(after - before) / BLOCK:.1f} background blocks landed during a foreground burst; "
        "only the one in flight when it began may"
    )
    # Background went on after the burst, and every byte is counted under its priority.
    assert report.ok and report.bytes_loaded == total
    assert wan_bytes("foreground") - foreground_before == len(burst_data)


def test_the_background_cap_holds_over_time(site: Site, tmp_path: Path) -> None:
    cap = 512 * KiB  # two blocks a second; the link carries almost five
    total = put_files(site, "load", 8, 1)
    fs = make_fs(site, cache_options(str(tmp_path / "cache"), background_rate=f"{cap}/s"))
    with Load(fs, site.url("load")) as load:
        report = load.wait()
    assert report.ok and report.bytes_loaded == total
    (t0, b0), *rest = load.progress[[b for _, b in load.progress].index(BLOCK) :]
    for t, b in rest:
        # At most the cap since the first block, plus the block that may be in flight.
        assert b - b0 <= cap * (t - t0) + BLOCK, (
            f"{b - b0} bytes in {t - t0:.2f} s over a cap of {cap} bytes/s"
        )
    t_last, b_last = rest[-1]
    assert b_last - b0 == total - BLOCK
    assert t_last - t0 >= 0.95 * (total - 2 * BLOCK) / cap


def test_background_waits_for_its_time_window(site: Site, tmp_path: Path) -> None:
    total = put_files(site, "load", 3, 1)
    fs = make_fs(
        site,
        cache_options(
            str(tmp_path / "cache"), background_rate="0", background_windows="02:00-03:00"
        ),
    )
    link = fs.engine.link
    day = 20_000 * 86400.0
    now = [day + 3600.0]  # 01:00 UTC
    link.wall_clock = lambda: now[0]
    waiting = threading.Event()

    class WindowWait(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "wait (window)" in record.getMessage():
                waiting.set()

    logger = logging.getLogger("edgecache.engine._qos")
    handler, level = WindowWait(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        before = wan_bytes("background")
        with Load(fs, site.url("load")) as load:
            assert waiting.wait(60), "background did not wait for its window"
            assert wan_bytes("background") == before and load.report is None
            now[0] = day + 2 * 3600.0  # 02:00: the window opens
            link.recheck()
            report = load.wait()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert report.ok and report.bytes_loaded == total
    assert wan_bytes("background") - before == total
