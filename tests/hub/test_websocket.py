"""exec/attach/port-forward ride WebSockets (kubectl's default since 1.31): the hub relays them.

The API test server has no exec, so a small aiohttp stub plays the kubelet-backed exec endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgecache.hub import HubServer

from .conftest import fast_settings

EXEC = "/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true"


async def _exec(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer node-token":
        return web.json_response({"kind": "Status", "code": 401}, status=401)
    ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
    await ws.prepare(request)
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(b"\x01" + message.data[1:].upper())  # stdout channel
    return ws


async def _ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def exec_upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/api/v1/namespaces/default/pods/web-0/exec", _exec)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_exec_websocket_is_relayed(exec_upstream: str, tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, exec_upstream)
    settings.upstream.token = "node-token"
    async with HubServer(settings) as hub, aiohttp.ClientSession() as http:
        async with http.ws_connect(
            hub.url + EXEC, protocols=("v5.channel.k8s.io", "v4.channel.k8s.io")
        ) as ws:
            assert ws.protocol == "v5.channel.k8s.io"
            await ws.send_bytes(b"\x00echo hi")
            reply = await ws.receive(timeout=5)
            assert reply.data == b"\x01ECHO HI"
        forged = {"Authorization": "Bearer forged"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(hub.url + EXEC, headers=forged)
        assert refused.value.status == 401
