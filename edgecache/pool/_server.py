"""The peer block server: serves this node's blocks (and its WAN fetches) to its pool peers.

Place in the data path::

    peer's PeerSource --HTTP--> PeerServer --> ReadEngine (identity from the request)
        MEM/SSD tiers (cached), block holders (the agent's views)
          --miss--> single-flight --> backend (WAN), then kept here

Every request must carry the pool token (``Authorization: Bearer``), compared in constant time;
without it, or with another, the answer is 401 and nothing else is looked at. A request the
asker marks as forwarded is fetched from this node's tiers and backend only, never asked of
another peer (see :mod:`edgecache.pool._context`), so nodes that disagree on the owner never
send a request round in a loop; the asker's WAN priority goes with the fetch. The protocol is
in :mod:`edgecache.pool._wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from edgecache.addresses import listening_socket
from edgecache.cache import encode_block
from edgecache.engine import PRIORITY_HEADER, Priority, ReadEngine, ReadPlan, fetch_priority
from edgecache.errors import ConfigError, ObjectChangedError
from edgecache.httpexpect import expect_handler
from edgecache.k8s import TokenSource
from edgecache.metrics import PEER_BYTES_SERVED, PEER_REQUESTS
from edgecache.pool._context import forwarded, serving
from edgecache.pool._wire import (
    ACCEPT_COMPRESSION_HEADER,
    ACCEPT_KEEPALIVE_HEADER,
    BLOCK_CONTENT_TYPE,
    BLOCKS_PATH,
    FORWARDED_HEADER,
    KEEPALIVE,
    KEEPALIVE_SECONDS,
    ONLY_CACHED_HEADER,
    plan_from_query,
)

__all__ = ["BlockHolder", "PeerServer"]

log = logging.getLogger(__name__)

_MIN_SAVING = 0.10
"""LZ4 is sent only when it saves at least this fraction (as on the SSD tier)."""
_RECENT_FRAMES = 8
"""Encoded blocks kept for the next askers (8 default blocks: 32 MiB at most): a pool's nodes
ask an owner for a block within a few block times of each other."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BlockHolder = Callable[[ReadPlan, int], "bytes | None"]
"""Somewhere else this node keeps whole objects (the agent's views, which drop their blocks
from the cache once materialised): block ``index`` of exactly that version, or None. Called
in a worker thread."""


class PeerServer:
    """An aiohttp server for the blocks of the engines ``engine_of`` finds by identity."""

    def __init__(
        self,
        *,
        listen: str,
        tokens: TokenSource,
        engine_of: Callable[[str], ReadEngine | None],
        holders: list[BlockHolder] | None = None,
        compression: str = "auto",
    ) -> None:
        self.listen = listen
        self._tokens = tokens
        self._engine_of = engine_of
        self._holders = holders if holders is not None else []
        self._compression = compression
        self._runner: web.AppRunner | None = None
        self.address = ""
        """``HOST:PORT`` actually bound (the port chosen when ``listen`` asked for 0)."""
        self._frames: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        """The last blocks encoded for the wire, by (digest, compression): see :meth:`_frame`."""
        self._frames_lock = threading.Lock()
        self.requests: dict[str, int] = {}
        """Requests answered by result, this server's own (tests and logs)."""

    def _count(self, result: str) -> None:
        self.requests[result] = self.requests.get(result, 0) + 1
        PEER_REQUESTS.labels("served", result).inc()

    async def start(self) -> None:
        sock = listening_socket(self.listen, option="--peer-listen")
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get(BLOCKS_PATH + "{digest}", self._block, expect_handler=expect_handler)
        app.router.add_get("/v1/ping", self._ping, expect_handler=expect_handler)
        # Every other path too, so no request meets aiohttp's own Expect handling.
        app.router.add_route("*", "/{tail:.*}", self._not_found, expect_handler=expect_handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        bound_host, bound_port = sock.getsockname()[:2]
        self.address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self._tokens.token()
        # The header's bytes as sent: aiohttp keeps bytes that are not UTF-8 as surrogates,
        # which a plain encode() refuses (a 500 for any such guess, found by fuzzing).
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        # Constant time whatever the guess; a node with no readable token serves nobody.
        if not token or not hmac.compare_digest(given, f"Bearer {token}".encode()):
            self._count("unauthorized")
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": 'Bearer realm="edgecache-pool"'},
            )
        return await handler(request)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found\n")

    async def _block(self, request: web.Request) -> web.StreamResponse:
        try:
            plan, index = plan_from_query(request.match_info["digest"], request.query)
        except ConfigError as exc:
            self._count("bad_request")
            return web.Response(status=400, text=f"{exc}\n")
        engine = self._engine_of(plan.backend)
        if engine is None:
            self._count("miss")
            return web.Response(status=404, text="no such backend on this node\n")
        key = plan.key(index)
        compression = (
            self._compression
            if "lz4" in request.headers.get(ACCEPT_COMPRESSION_HEADER, "")
            else "none"
        )
        data = await asyncio.to_thread(self._held, engine, plan, index)
        if data is not None:
            self._count("cached")
            return await self._send(request, key.digest, data, compression)
        if request.headers.get(ONLY_CACHED_HEADER) or not engine.health.online:
            self._count("miss")
            return web.Response(status=404, text="not cached on this node\n")
        # The status line goes out now, before the WAN fetch: the asker's first-byte timeout
        # then tells a dead peer from a busy link.
        response = web.StreamResponse(headers={"Content-Type": BLOCK_CONTENT_TYPE})
        await response.prepare(request)
        fetching = asyncio.ensure_future(self._fetch(request, engine, plan, index))
        # Not cancelled if the asker goes: the block is kept here for the pool.
        fetching.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            data = await self._while_fetching(request, response, fetching)
        except ObjectChangedError:
            self._count("changed")
            return self._abort(request, response)
        except Exception as exc:  # the asker falls back to its own backend
            log.debug("peer fetch of block %d of %s failed: %s", index, plan.path, exc)
            self._count("error")
            return self._abort(request, response)
        self._count("fetched")
        frame = await asyncio.to_thread(self._frame, data, key.digest, compression)
        await response.write(frame)
        await response.write_eof()
        PEER_BYTES_SERVED.inc(len(data))
        return response

    @staticmethod
    async def _while_fetching(
        request: web.Request, response: web.StreamResponse, fetching: asyncio.Future[bytes]
    ) -> bytes:
        """The fetched block; meanwhile a keepalive newline every few seconds to an asker that
        accepts them (see :mod:`edgecache.pool._wire`), so that its silence timeout does not
        run out while this node's fetch waits for its turn on the link."""
        if not request.headers.get(ACCEPT_KEEPALIVE_HEADER):
            return await asyncio.shield(fetching)
        while True:
            done, _ = await asyncio.wait({fetching}, timeout=KEEPALIVE_SECONDS)
            if done:
                return fetching.result()
            await response.write(KEEPALIVE)

    def _held(self, engine: ReadEngine, plan: ReadPlan, index: int) -> bytes | None:
        data = engine.blocks.get_cached(plan.key(index))
        for holder in self._holders:
            if data is not None:
                break
            data = holder(plan, index)
        if data is not None and len(data) != plan.block_length(index):
            return None
        return data

    async def _fetch(
        self, request: web.Request, engine: ReadEngine, plan: ReadPlan, index: int
    ) -> bytes:
        priority = Priority.from_header(request.headers.get(PRIORITY_HEADER))
        with fetch_priority(priority), serving():
            if request.headers.get(FORWARDED_HEADER):
                with forwarded():
                    return await engine.block(plan, index)
            return await engine.block(plan, index)

    def _frame(self, data: bytes, digest: str, compression: str) -> bytes:
        # The askers of a pool read the same files at about the same time: a block's owner
        # serves it to each of them within moments. Encoding it once (checksums, the LZ4
        # trial, a copy of 4 MiB) instead of once per asker is CPU the node's reads get back.
        key = (digest, compression)
        with self._frames_lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
                return frame
        frame = encode_block(data, digest=digest, compression=compression, min_saving=_MIN_SAVING)
        with self._frames_lock:
            self._frames[key] = frame
            while len(self._frames) > _RECENT_FRAMES:
                self._frames.popitem(last=False)
        return frame

    async def _send(
        self, request: web.Request, digest: str, data: bytes, compression: str
    ) -> web.Response:
        frame = await asyncio.to_thread(self._frame, data, digest, compression)
        PEER_BYTES_SERVED.inc(len(data))
        return web.Response(body=frame, headers={"Content-Type": BLOCK_CONTENT_TYPE})

    @staticmethod
    def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        # The status line is out: closing the connection mid-body is the only way left to say
        # "no". The asker's frame check fails and it fetches the block itself.
        with contextlib.suppress(Exception):
            if request.transport is not None:
                request.transport.abort()
        return response
