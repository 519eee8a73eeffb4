"""The WAN emulator keeps its promises: transfer time = size / rate + RTT, ~1 RTT per exchange,
bandwidth shared by connections, bytes counted, and a link that can be cut and restored."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import oss2
import pytest
from edgecache_testservers.oss import OSSServer
from edgecache_testservers.wan import (
    EDGE_80MS_20MBIT,
    LINK_30MS_100MBIT,
    TokenBucket,
    WANEmulator,
    WANProfile,
)

# Runs alone (conftest.py): link rates and round trips measured on the clock.
pytestmark = pytest.mark.exclusive

MiB = 1 << 20


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A tiny upstream: PING -> PONG; GET n -> n bytes; PUT n and n bytes -> OK."""
    try:
        while line := await reader.readline():
            verb, _, size = line.decode().strip().partition(" ")
            if verb == "PING":
                writer.write(b"PONG\n")
            elif verb == "GET":
                writer.write(b"\0" * int(size))
            elif verb == "PUT":
                await reader.readexactly(int(size))
                writer.write(b"OK\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def _connect(wan: WANEmulator) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*wan.address)
    writer.write(b"PING\n")  # pays the handshake RTT, so later timings see an open connection
    assert await reader.readline() == b"PONG\n"
    return reader, writer


async def _timed_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int
) -> float:
    start = time.perf_counter()
    writer.write(f"GET {size}\n".encode())
    await reader.readexactly(size)
    return time.perf_counter() - start


async def _assert_takes(
    expected: float, attempt: Callable[[], Awaitable[float]], *, tolerance: float = 0.10
) -> None:
    """``attempt`` takes ``expected`` seconds within ``tolerance``. A loaded machine's late timers
    only ever add time, so a slow attempt is repeated (up to three in all); a fast one fails."""
    measured = []
    for _ in range(3):
        measured.append(await attempt())
        assert measured[-1] >= (1 - tolerance) * expected, (measured, expected)
        if measured[-1] <= (1 + tolerance) * expected:
            return
    raise AssertionError(f"took {measured} s, expected {expected:.3f} s")


async def test_download_runs_at_link_rate_plus_one_rtt(upstream: str) -> None:
    async with WANEmulator(upstream, LINK_30MS_100MBIT) as wan:
        reader, writer = await _connect(wan)
        # 1.342 s on the wire, plus the request's round trip
        await _assert_takes(16 * MiB / 12.5e6 + 0.030, lambda: _timed_get(reader, writer, 16 * MiB))
        assert wan.bytes_down >= 16 * MiB
        writer.close()


async def test_upload_and_slow_edge_profile(upstream: str) -> None:
    async with WANEmulator(upstream, LINK_30MS_100MBIT) as wan:
        reader, writer = await _connect(wan)

        async def put() -> float:
            wan.reset_counters()
            start = time.perf_counter()
            writer.write(b"PUT %d\n" % (4 * MiB) + b"\1" * (4 * MiB))
            assert await reader.readline() == b"OK\n"
            return time.perf_counter() - start

        await _assert_takes(4 * MiB / 12.5e6 + 0.030, put)
        assert wan.bytes_up == len(b"PUT %d\n" % (4 * MiB)) + 4 * MiB
        assert wan.bytes_down == 3
        writer.close()
    async with WANEmulator(upstream, EDGE_80MS_20MBIT) as wan:
        reader, writer = await _connect(wan)
        await _assert_takes(MiB / 2.5e6 + 0.080, lambda: _timed_get(reader, writer, MiB))
        writer.close()


async def test_small_exchange_costs_one_rtt_and_a_connection_two(upstream: str) -> None:
    async with WANEmulator(upstream, LINK_30MS_100MBIT) as wan:
        firsts = []
        for _ in range(5):
            start = time.perf_counter()
            reader, writer = await _connect(wan)
            firsts.append(time.perf_counter() - start)
            writer.close()
        reader, writer = await _connect(wan)
        # What the emulator adds is the minimum; the rest is the machine's timer jitter.
        assert 0.059 <= min(firsts) <= 0.066, firsts  # handshake RTT + request RTT
        rounds = []
        for _ in range(9):
            start = time.perf_counter()
            writer.write(b"PING\n")
            await reader.readline()
            rounds.append(time.perf_counter() - start)
        assert 0.0295 <= min(rounds) <= 0.033, rounds
        assert statistics.median(rounds) <= 0.040, rounds  # timer jitter on a busy machine
        wan.set_profile(WANProfile(rtt_ms=10, mbit=100))
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            writer.write(b"PING\n")
            await reader.readline()
            rounds.append(time.perf_counter() - start)
        assert 0.0095 <= min(rounds) <= 0.013, rounds
        writer.close()


async def test_connections_share_the_link(upstream: str) -> None:
    async with WANEmulator(upstream, LINK_30MS_100MBIT) as wan:
        connections = [await _connect(wan) for _ in range(2)]

        async def both() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(_timed_get(r, w, 2 * MiB) for r, w in connections))
            return time.perf_counter() - start

        await _assert_takes(4 * MiB / 12.5e6 + 0.030, both)
        for _, writer in connections:
            writer.close()


async def test_cut_resets_and_restore_reconnects(upstream: str) -> None:
    async with WANEmulator(upstream, WANProfile(rtt_ms=2, mbit=1000)) as wan:
        reader, writer = await _connect(wan)
        wan.cut()
        assert wan.is_cut
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"PING\n")
            await reader.readexactly(5)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _connect(wan)
        wan.restore()
        reader, writer = await _connect(wan)
        writer.close()


async def test_blackhole_swallows_traffic_until_restored(upstream: str) -> None:
    async with WANEmulator(upstream, WANProfile(rtt_ms=2, mbit=1000)) as wan:
        reader, writer = await _connect(wan)
        wan.cut("blackhole")
        writer.write(b"PING\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readline(), timeout=0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_connect(wan), timeout=0.2)
        wan.restore()
        assert await reader.read() == b""  # the blackholed connection is gone
        reader, writer = await _connect(wan)
        writer.close()


def test_sync_use_in_front_of_the_oss_server() -> None:
    with (
        OSSServer(credentials={"ak": "sk"}) as oss,
        WANEmulator(oss.endpoint, WANProfile(rtt_ms=20, mbit=200)) as wan,
    ):
        oss.put_object("wan-bucket", "obj", b"\7" * MiB)
        bucket = oss2.Bucket(oss2.Auth("ak", "sk"), wan.endpoint, "wan-bucket")
        start = time.perf_counter()
        assert bucket.get_object("obj").read() == b"\7" * MiB
        # connect (1 RTT) + request (1 RTT) + 1 MiB at 25 MB/s
        assert time.perf_counter() - start >= 0.04 + MiB / 25e6
        assert wan.bytes_down > MiB
        wan.cut()
        with pytest.raises(oss2.exceptions.RequestError):
            oss2.Bucket(oss2.Auth("ak", "sk"), wan.endpoint, "wan-bucket").get_object("obj")
        wan.restore()
        assert bucket.get_object("obj", byte_range=(0, 9)).read() == b"\7" * 10


def test_token_bucket_paces_and_bursts() -> None:
    now = [0.0]
    bucket = TokenBucket(1000.0, 500.0, clock=lambda: now[0])
    assert bucket.reserve(500) == 0.0  # the burst is free
    assert bucket.reserve(1000) == pytest.approx(1.0)  # then the rate applies, in call order
    assert bucket.reserve(1000) == pytest.approx(2.0)
    now[0] = 10.0
    assert bucket.reserve(100) == 10.0  # refilled while idle, up to the burst


def test_only_loopback_upstreams() -> None:
    with pytest.raises(ValueError, match="loopback"):
        WANEmulator("10.1.2.3:80")
    assert WANEmulator("http://localhost:9000").upstream == ("localhost", 9000)


async def test_command_line(upstream: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgecache_testservers.wan",
        "--upstream",
        upstream,
        "--rtt-ms",
        "10",
        "--mbit",
        "50",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await process.stdout.readline()).decode()
        assert line.startswith("wan listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\n")
        assert await reader.readline() == b"PONG\n"
        writer.close()
    finally:
        process.terminate()
        output = (await process.stdout.read()).decode()  # type: ignore[union-attr]
        assert await process.wait() == 0
    assert "bytes up 5 down 5" in output
