"""exec/attach/port-forward over SPDY (client-go's SPDY executor, older kubectl): the hub relays
any non-WebSocket upgrade as raw bytes after the upstream's 101.

A raw asyncio server plays the API server: it answers ``/readyz`` for the health probe and one
exec path with a SPDY 101, then echoes what it gets uppercased.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgecache.hub import HubServer

from .conftest import fast_settings

EXEC = "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true"
TOKENS = ("Bearer node-token", "Bearer client-token")


def _headers(lines: list[str]) -> dict[str, str]:
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


class SpdyUpstream:
    """The fake API server; ``seen`` holds the headers of each exec request it got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.ended = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = _headers(head[1:])
            if not head[0].startswith("POST /api/v1/namespaces/default/pods/web-0/exec?"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                return
            self.seen.append(headers)
            if headers.get("authorization") not in TOKENS:
                # Chunked, as Go writes a Status without a length.
                body = b'{"kind":"Status","code":401}'
                writer.write(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n0\r\n\r\n"
                )
                return
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
            )
            while data := await reader.read(1 << 16):
                if data == b"BYE":
                    break  # the upstream ends the stream
                writer.write(data.upper())
                await writer.drain()
            self.ended.set()
        finally:
            writer.close()


@pytest.fixture
async def spdy_upstream() -> AsyncIterator[SpdyUpstream]:
    upstream = SpdyUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


async def _upgrade(
    hub_url: str, authorization: str | None = None
) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client: sends the SPDY upgrade request and returns the answer head."""
    host_port = hub_url.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [
        f"POST {EXEC} HTTP/1.1",
        f"Host: {host_port}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
        "X-Stream-Protocol-Version: v3.channel.k8s.io",
        "Content-Length: 0",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head.decode("latin-1"), reader, writer


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for message in (b"\x00\x01frame one", b"frame two", b"x" * 5000):
        writer.write(message)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message.upper()


async def test_spdy_upgrade_is_relayed(spdy_upstream: SpdyUpstream, tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, spdy_upstream.url)
    settings.upstream.token = "node-token"
    async with HubServer(settings) as hub:
        # No credentials of its own: the hub's token goes upstream, like for WebSockets.
        head, reader, writer = await _upgrade(hub.url)
        status, *header_lines = head.split("\r\n")
        assert status.startswith("HTTP/1.1 101 ")
        headers = _headers(header_lines)
        assert headers["upgrade"] == "SPDY/3.1"
        assert headers["connection"].lower() == "upgrade"
        assert headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
        await _roundtrip(reader, writer)
        seen = spdy_upstream.seen[-1]
        assert seen["authorization"] == "Bearer node-token"
        assert seen["upgrade"] == "SPDY/3.1"
        # The client closes: the upstream side of the relay ends too.
        writer.close()
        await asyncio.wait_for(spdy_upstream.ended.wait(), 5)

        # The client's own bearer token is forwarded as it is.
        spdy_upstream.ended.clear()
        head, reader, writer = await _upgrade(hub.url, "Bearer client-token")
        assert head.startswith("HTTP/1.1 101 ")
        assert spdy_upstream.seen[-1]["authorization"] == "Bearer client-token"
        await _roundtrip(reader, writer)
        # The upstream closes: the client sees the end of the stream.
        writer.write(b"BYE")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        # A refused upgrade comes back as the upstream's normal answer.
        head, reader, writer = await _upgrade(hub.url, "Bearer forged")
        assert head.startswith("HTTP/1.1 401 ")
        assert spdy_upstream.seen[-1]["authorization"] == "Bearer forged"
        length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        assert body == b'{"kind":"Status","code":401}'
        writer.close()


async def test_spdy_upgrade_offline_is_503(spdy_upstream: SpdyUpstream, tmp_path: Path) -> None:
    async with HubServer(fast_settings(tmp_path, spdy_upstream.url)) as hub:
        await spdy_upstream.close()
        await hub.health.wait_for(False, within_seconds=5)
        head, _, writer = await _upgrade(hub.url)
        assert head.startswith("HTTP/1.1 503 ")
        writer.close()
