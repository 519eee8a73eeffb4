"""A WAN emulator for tests and benchmarks: a TCP proxy that adds latency and caps bandwidth.

Edge sites reach cloud storage over a slow link (e.g. 30 ms RTT at 100 Mbit/s), and what edgecache
does about it (parallel ranged reads, read-ahead, connection reuse, offline service) only shows
over such a link. This kernel has no ``netem``, so the link is emulated in user space: a proxy on
127.0.0.1 in front of one upstream ``host:port`` (a test server: moto, the OSS or Kubernetes test
servers), placed between the client and the server.

Each direction is a link shared by all connections: bytes are paid for at the link rate by one
token bucket per direction (serialisation), then delivered ``rtt/2`` later (propagation), as a
delay line: latency does not reduce throughput, so a transfer takes ``size / rate + rtt`` as on a
real path. A new connection pays one RTT for its handshake (held before its first byte goes
upstream), as TCP does. Bytes are counted each way. ``cut()`` takes the link down (connections
reset, new ones refused, or a silent blackhole) and ``restore()`` brings it back.

    with WANEmulator(oss_server.endpoint, WANProfile(rtt_ms=30, mbit=100)) as wan:
        fs = OSSFileSystem(endpoint=wan.endpoint, ...)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from edgecache_testservers._threadloop import LoopThreadService

__all__ = [
    "EDGE_80MS_20MBIT",
    "LINK_30MS_100MBIT",
    "CutMode",
    "TokenBucket",
    "WANEmulator",
    "WANProfile",
]

T = TypeVar("T")
CutMode = Literal["reset", "blackhole"]

_CHUNK_BYTES = 64 * 1024
"""Largest read from a socket: one token-bucket reservation, one delayed delivery."""


@dataclass(frozen=True)
class WANProfile:
    """A link: round-trip time and bandwidth per direction (``up_mbit`` defaults to ``mbit``)."""

    rtt_ms: float = 30.0
    """Round-trip time in milliseconds; each direction adds half."""
    mbit: float = 100.0
    """Bandwidth towards the client (downloads), in Mbit/s (10^6 bits per second)."""
    up_mbit: float | None = None
    """Bandwidth towards the upstream (uploads), in Mbit/s; ``None``: the same as ``mbit``."""
    handshake_rtts: float = 1.0
    """Round trips a new connection waits before its first byte goes upstream (TCP: one)."""
    burst_bytes: int = 0
    """Token-bucket depth: what an idle link sends before the rate applies. 0: every byte pays
    its serialisation time, as on a real link (``tc tbf`` would allow a burst)."""

    @property
    def one_way_seconds(self) -> float:
        return self.rtt_ms / 2000.0

    @property
    def down_bytes_per_second(self) -> float:
        return self.mbit * 1e6 / 8

    @property
    def up_bytes_per_second(self) -> float:
        return (self.mbit if self.up_mbit is None else self.up_mbit) * 1e6 / 8

    def transfer_seconds(self, size_bytes: int, *, upload: bool = False) -> float:
        """The ideal time to move ``size_bytes`` one way on this link, propagation included."""
        rate = self.up_bytes_per_second if upload else self.down_bytes_per_second
        return size_bytes / rate + self.one_way_seconds


LINK_30MS_100MBIT = WANProfile(rtt_ms=30, mbit=100)
"""The design's reference link (benchmarks: cold reads should reach >= 0.9x of it)."""
EDGE_80MS_20MBIT = WANProfile(rtt_ms=80, mbit=20)
"""A slower edge site."""


class TokenBucket:
    """A bandwidth cap: ``rate`` bytes per second with ``burst`` bytes of depth.

    Callers reserve before sending; the bucket may go into debt, and :meth:`reserve` answers when
    the reservation is paid for. Reservations are served in call order, so concurrent senders share
    the rate as packets share a link. ``clock`` is ``time.monotonic`` or a loop's ``time``.
    """

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 0:
            raise ValueError("rate must be positive and burst non-negative")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def reserve(self, size: float) -> float:
        """Take ``size`` bytes' worth of tokens; returns the clock time when they are paid."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= size
        if self._tokens >= 0:
            return now
        return now - self._tokens / self.rate

    def set_rate(self, rate: float) -> None:
        self.reserve(0)  # settle the balance at the old rate first
        self.rate = rate


class _Link:
    """One direction of the emulated path: its bandwidth cap, delay and byte count."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.bucket = TokenBucket(rate, burst, clock=clock)
        self.delay = 0.0
        self.bytes = 0


class _Pipe:
    """Moves one direction of one connection through a link: a reader stamps each chunk with its
    delivery time (paid at the link rate, plus the delay) into a bounded delay line, and a writer
    delivers each chunk at its time."""

    def __init__(
        self,
        emulator: WANEmulator,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        hold_until: float = 0.0,
    ) -> None:
        self.emulator = emulator
        self.link = link
        self.reader = reader
        self.writer = writer
        self.hold_until = hold_until
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued_bytes = 0
        self.wake_writer = asyncio.Event()
        self.wake_reader = asyncio.Event()

    async def run(self) -> None:
        deliver = asyncio.create_task(self._deliver())
        try:
            await self._read()
        except BaseException:
            deliver.cancel()
            raise
        finally:
            if self.emulator._blackholed:
                deliver.cancel()  # nothing crosses a dead link, not even the end of the stream
            with contextlib.suppress(asyncio.CancelledError):
                await deliver

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        last_delivery = 0.0
        try:
            while True:
                data = await self.reader.read(_CHUNK_BYTES)
                if not data:
                    break
                if self.emulator._blackholed:
                    continue  # dropped on the floor
                # Delivery times come from the bucket's schedule, not from when this task woke
                # up: a late timer adds latency to one chunk but never lowers throughput.
                paid = self.link.bucket.reserve(len(data))
                last_delivery = max(paid, self.hold_until) + self.link.delay
                self._push(last_delivery, data)
                # Read ahead a bounded amount (TCP backpressure reaches the sender).
                while self.queued_bytes > self._wire_bytes():
                    self.wake_reader.clear()
                    await self.wake_reader.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            self._push(max(last_delivery, loop.time() + self.link.delay), None)

    def _wire_bytes(self) -> float:
        # Propagation plus 100 ms of serialisation: enough to ride out a busy machine's late
        # timers without idling the link, small enough that backpressure reaches the sender.
        return 4 * _CHUNK_BYTES + self.link.bucket.rate * (self.link.delay + 0.1)

    def _push(self, when: float, data: bytes | None) -> None:
        self.queue.append((when, data))
        if data is not None:
            self.queued_bytes += len(data)
        self.wake_writer.set()

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.queue:
                    self.wake_writer.clear()
                    await self.wake_writer.wait()
                when, data = self.queue[0]
                pause = when - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                self.queue.popleft()
                if data is not None and self.emulator._blackholed:
                    self.queued_bytes -= len(data)
                    self.wake_reader.set()
                    continue  # in flight when the link died: lost
                if data is None:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    return
                self.queued_bytes -= len(data)
                self.wake_reader.set()
                self.writer.write(data)
                self.link.bytes += len(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            self.writer.transport.abort()


class WANEmulator(LoopThreadService):
    """A TCP proxy on ``127.0.0.1`` (a free port unless told) that makes ``upstream`` look far.

    ``upstream``: ``"host:port"``, ``(host, port)`` or a URL such as a test server's endpoint; it
    must be a loopback address (tests never reach beyond this machine). ``profile``: the link
    (:data:`LINK_30MS_100MBIT` by default); :meth:`set_profile` changes it on the fly.
    Use as ``async with`` on the caller's loop or as ``with`` (its own loop in a thread).
    """

    thread_name = "wan-emulator"

    def __init__(
        self,
        upstream: str | tuple[str, int],
        profile: WANProfile = LINK_30MS_100MBIT,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = _parse_upstream(upstream)
        self.host = host
        self._port = port
        self._profile = profile
        self._up: _Link | None = None
        self._down: _Link | None = None
        self._server: asyncio.Server | None = None
        LoopThreadService.__init__(self)
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut: CutMode | None = None
        self._blackholed = False
        self.connections_accepted = 0
        self._bytes_offset = (0, 0)

    # ------------------------------------------------------------------------------ facts

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self._port

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: where clients connect instead of the upstream."""
        return f"http://{self.host}:{self._port}"

    @property
    def profile(self) -> WANProfile:
        return self._profile

    @property
    def bytes_up(self) -> int:
        """Bytes delivered to the upstream (requests, uploads) since the last reset."""
        return (self._up.bytes if self._up else 0) - self._bytes_offset[0]

    @property
    def bytes_down(self) -> int:
        """Bytes delivered to clients (responses, downloads) since the last reset."""
        return (self._down.bytes if self._down else 0) - self._bytes_offset[1]

    def reset_counters(self) -> None:
        self._bytes_offset = (
            self._up.bytes if self._up else 0,
            self._down.bytes if self._down else 0,
        )

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def is_cut(self) -> bool:
        return self._cut is not None

    # ---------------------------------------------------------------------- link control

    def set_profile(self, profile: WANProfile) -> None:
        """Change latency and bandwidth; bytes already on the wire keep their delivery time."""
        self._profile = profile
        self._call(self._apply_profile)

    def _apply_profile(self) -> None:
        profile = self._profile
        for link, rate in (
            (self._up, profile.up_bytes_per_second),
            (self._down, profile.down_bytes_per_second),
        ):
            if link is not None:
                link.bucket.set_rate(rate)
                link.bucket.burst = profile.burst_bytes
                link.delay = profile.one_way_seconds

    def cut(self, mode: CutMode = "reset") -> None:
        """Take the link down. ``reset``: open connections are reset and new ones are closed as
        soon as they are accepted (fails fast, like a refused connection). ``blackhole``: nothing
        passes and nothing is answered (clients wait until their timeouts)."""
        self._call(lambda: self._cut_now(mode))

    def restore(self) -> None:
        """Bring the link back for new connections (ones that lived through a blackhole are
        reset: their bytes were lost)."""
        self._call(self._restore_now)

    def _cut_now(self, mode: CutMode) -> None:
        self._cut = mode
        self._blackholed = mode == "blackhole"
        if mode == "reset":
            self._abort_all()

    def _restore_now(self) -> None:
        if self._blackholed:
            self._abort_all()
        self._cut = None
        self._blackholed = False

    def _abort_all(self) -> None:
        for client, upstream in list(self._connections):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()

    def _call(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the proxy's loop (now if called from it, else and wait)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            function()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            function()
            return

        async def call() -> None:
            function()

        asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    # ------------------------------------------------------------------------- the proxy

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections_accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        entry: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (client_writer, None)
        try:
            if self._cut == "reset":
                client_writer.transport.abort()
                return
            self._connections.add(entry)
            if self._blackholed:
                # The handshake went nowhere: swallow what the client sends until it gives up
                # or restore() resets it.
                while await client_reader.read(_CHUNK_BYTES):
                    pass
                return
            loop = asyncio.get_running_loop()
            hold_until = loop.time() + self._profile.handshake_rtts * self._profile.rtt_ms / 1000
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                client_writer.transport.abort()
                return
            self._connections.discard(entry)
            entry = (client_writer, up_writer)
            self._connections.add(entry)
            assert self._up is not None and self._down is not None
            upstream = _Pipe(self, self._up, client_reader, up_writer, hold_until=hold_until)
            downstream = _Pipe(self, self._down, up_reader, client_writer)
            await asyncio.gather(upstream.run(), downstream.run())
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(entry)
            for writer in entry:
                if writer is not None:
                    writer.transport.abort()
            self._tasks.discard(task)

    # ------------------------------------------------------------------ async lifecycle

    async def astart(self) -> None:
        """Listen on the running loop (on the same port as before if started earlier)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._up is None or self._down is None:
            self._up = _Link(
                self._profile.up_bytes_per_second, self._profile.burst_bytes, loop.time
            )
            self._down = _Link(
                self._profile.down_bytes_per_second, self._profile.burst_bytes, loop.time
            )
        self._apply_profile()
        self._server = await asyncio.start_server(
            self._accept, self.host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def astop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._abort_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=2)


def _parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(upstream, tuple):
        host, port = upstream
    else:
        parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream needs a host and a port: {upstream!r}")
        host, port = parts.hostname, parts.port
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the WAN emulator only proxies to loopback addresses, not {host!r}")
    return host, port


# ------------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edgecache_testservers.wan",
        description="Run the WAN emulator in its own process (benchmarks: the proxy then "
        "shares no interpreter lock with the client or the server).",
    )
    parser.add_argument("--upstream", required=True, help="loopback HOST:PORT or URL to proxy")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument("--rtt-ms", type=float, default=LINK_30MS_100MBIT.rtt_ms)
    parser.add_argument("--mbit", type=float, default=LINK_30MS_100MBIT.mbit, help="downlink")
    parser.add_argument("--up-mbit", type=float, default=None, help="uplink (default: --mbit)")
    parser.add_argument("--handshake-rtts", type=float, default=1.0)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    profile = WANProfile(
        rtt_ms=args.rtt_ms,
        mbit=args.mbit,
        up_mbit=args.up_mbit,
        handshake_rtts=args.handshake_rtts,
    )
    async with WANEmulator(args.upstream, profile, port=args.port) as wan:
        print(f"wan listening on {wan.endpoint}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, done.set)
        await done.wait()
        print(f"bytes up {wan.bytes_up} down {wan.bytes_down}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m edgecache_testservers.wan --upstream 127.0.0.1:9000 --rtt-ms 30 --mbit 100``."""
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
