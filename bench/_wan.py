"""The emulated WAN of the benchmarks: moto's S3 server and the WAN emulator, each its own process.

Cold reads over a slow link are what edgecache exists for, so several benchmarks need the same
set-up: moto's S3 server (``python -m moto.server``, with ranged GETs patched to read only their
range, as S3 does: see ``_MOTO_RANGED_GETS``; ``stock=True`` for moto as shipped) and the WAN
emulator (:mod:`edgecache_testservers.wan`, a TCP proxy with a delay line and a token bucket) in
front of it, each in a process of its own so that neither shares an interpreter lock with the
client being measured. The benchmark script is the client. This module is the one
implementation of that set-up; ``wan_bench.py`` and ``user_bench.py`` use it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from edgecache_testservers.wan import CutMode, WANEmulator, WANProfile

__all__ = [
    "KEY",
    "SECRET",
    "Link",
    "RandomReader",
    "cpu_seconds",
    "moto_server",
    "s3_client",
]

KEY, SECRET = "bench-key", "bench-secret"
"""Credentials of the benchmark buckets (moto accepts any)."""

# The emulator in its own process: one JSON line per command on stdin/stdout, so the benchmark
# can read and reset the byte counters between measurements and cut and restore the link.
_EMULATOR_CHILD = """
import asyncio, json, sys
from edgecache_testservers.wan import WANEmulator, WANProfile

async def main(upstream, rtt_ms, mbit):
    async with WANEmulator(upstream, WANProfile(rtt_ms=rtt_ms, mbit=mbit)) as wan:
        print(json.dumps({"endpoint": wan.endpoint}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line == "reset":
                wan.reset_counters()
            elif line in ("cut reset", "cut blackhole"):
                wan.cut(line.split()[1])
            elif line == "restore":
                wan.restore()
            elif line != "counters":
                break
            print(json.dumps({"up": wan.bytes_up, "down": wan.bytes_down,
                              "connections": wan.connections_accepted}), flush=True)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
"""


# moto's server with one change: a ranged GET reads only the bytes of its range, as S3 does.
# Stock moto (5.x) reads the whole object for every ranged GET (``FakeKey.value``) and then
# slices it: a 4 MiB block of a 256 MiB object costs moto about half a second of CPU here, so a
# block cache's many ranged GETs measure moto, not the link. The patch hands the range handler a
# view whose slices read from moto's buffer; anything it does not slice is read whole as before.
_MOTO_RANGED_GETS = """
import sys, threading
from moto.s3 import models, responses
from moto import server

_ranged = threading.local()
_value = models.FakeKey.value.fget

class _View:
    def __init__(self, key):
        self.key = key
    def __len__(self):
        return self.key.contentsize
    def __bool__(self):
        return self.key.contentsize > 0
    def __getitem__(self, span):
        start, stop, _ = span.indices(self.key.contentsize)
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))

def value(self):
    return _View(self) if getattr(_ranged, "on", False) else _value(self)

models.FakeKey.value = property(value, models.FakeKey.value.fset)
_key_response = responses.S3Response.key_response

def key_response(self, request, full_url, headers):
    _ranged.on = request.method == "GET" and bool(request.headers.get("range"))
    try:
        status, headers, body = _key_response(self, request, full_url, headers)
    finally:
        _ranged.on = False
    if isinstance(body, _View):
        body = body[:]
    return status, headers, body

responses.S3Response.key_response = key_response
if sys.argv[1] == "--keep-alive":
    # HTTP/1.1 with kept connections, as S3 and OSS answer (see moto_server).
    import os, waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    host, port = sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    waitress.serve(app, host=host, port=port, threads=16, connection_limit=1000, _quiet=True)
else:
    sys.argv[0] = "moto_server"
    server.main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def moto_server(
    *, stock: bool = False, key_buffer_bytes: int | None = None, keep_alive: bool = False
) -> Iterator[tuple[str, int]]:
    """moto's S3 server as a separate process; yields (endpoint, pid) and kills it at the end.

    ``stock``: ``python -m moto.server`` as shipped, whose ranged GET reads the whole object
    (see ``_MOTO_RANGED_GETS``); otherwise moto with ranged GETs reading only their range.
    ``key_buffer_bytes``: moto keeps an object bigger than this (default 5 MiB) in a temporary
    file on disk. ``keep_alive``: moto's application served by waitress, which keeps HTTP/1.1
    connections open between requests as S3 and OSS do; moto's own server (werkzeug's) closes
    the connection after every response, so each request there pays a TCP handshake (a round
    trip of the emulated link) that a real object store does not charge.
    """
    if stock and keep_alive:
        raise ValueError("keep_alive serves the patched moto; stock moto runs its own server")
    port = _free_port()
    env = dict(os.environ)
    if key_buffer_bytes is not None:
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(key_buffer_bytes)
    if stock:
        command = ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    elif keep_alive:
        command = ["-c", _MOTO_RANGED_GETS, "--keep-alive", "127.0.0.1", str(port)]
    else:
        command = ["-c", _MOTO_RANGED_GETS, "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        yield endpoint, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client straight to ``endpoint`` (for seeding buckets, not through the WAN)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )


class Link:
    """The WAN emulator, in a child process (default) or on a thread of this process."""

    def __init__(self, upstream: str, profile: WANProfile, *, in_process: bool = False) -> None:
        self.profile = profile
        self._process: subprocess.Popen[str] | None = None
        self._emulator: WANEmulator | None = None
        if in_process:
            self._emulator = WANEmulator(upstream, profile)
            self._emulator.start()
            self.endpoint = self._emulator.endpoint
        else:
            link_args = [str(profile.rtt_ms), str(profile.mbit)]
            self._process = subprocess.Popen(
                [sys.executable, "-c", _EMULATOR_CHILD, upstream, *link_args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.endpoint = self._reply()["endpoint"]

    @property
    def pid(self) -> int | None:
        """The emulator's process (None when it runs on a thread of this one)."""
        return self._process.pid if self._process is not None else None

    def _reply(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the WAN emulator process ended")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _command(self, command: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._reply()

    def reset(self) -> None:
        if self._emulator is not None:
            self._emulator.reset_counters()
        else:
            self._command("reset")

    def counters(self) -> dict[str, int]:
        if self._emulator is not None:
            return {
                "up": self._emulator.bytes_up,
                "down": self._emulator.bytes_down,
                "connections": self._emulator.connections_accepted,
            }
        return {k: int(v) for k, v in self._command("counters").items()}

    def cut(self, mode: CutMode = "reset") -> None:
        """Take the link down (see :meth:`WANEmulator.cut`); returns once it is down."""
        if self._emulator is not None:
            self._emulator.cut(mode)
        else:
            self._command(f"cut {mode}")

    def restore(self) -> None:
        """Bring the link back; returns once new connections pass again."""
        if self._emulator is not None:
            self._emulator.restore()
        else:
            self._command("restore")

    def close(self) -> None:
        if self._emulator is not None:
            self._emulator.close()
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # end of input: the child stops its emulator and exits
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.send_signal(signal.SIGKILL)
                self._process.wait()


class RandomReader:
    """A file-like source of ``size`` incompressible bytes (no 256 MiB buffer in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds used so far by process ``pid`` (None: this process)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
