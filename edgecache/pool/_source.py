"""PeerSource: the read engine's block source that asks the block's owner in the pool.

Place in the data path::

    ReadEngine --miss--> PeerSource.fetch --> owner_of(digest, live members)
        owner is this node ------------------------------> skip: the backend (WAN) serves it
        owner is a peer --HTTP (timeouts)--> its server --> verified block, or skip

A skip (:class:`~edgecache.engine.SourceSkipped`) hands the block to the next source, in the
end the backend, so a dead, slow or misconfigured peer costs at most its timeouts (and then
its cooldown keeps it out) and never a failed read. While this node's backend is unreachable,
the owner and then every other live peer is asked for the block only if it holds it
(``fetch_held``, which the engine calls when the backend fails): a site cut from the cloud
still reads what any node of the pool holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

import aiohttp

from edgecache.cache import decode_block_bytes
from edgecache.engine import ReadEngine, ReadPlan, SourceSkipped
from edgecache.errors import CorruptBlockError
from edgecache.metrics import PEER_BYTES_RECEIVED, PEER_HITS, PEER_REQUESTS
from edgecache.pool._context import is_forwarded
from edgecache.pool._hashing import owner_of, ranked
from edgecache.pool._members import Member
from edgecache.pool._settings import PeerTimeouts
from edgecache.pool._wire import (
    ACCEPT_COMPRESSION_HEADER,
    ACCEPT_KEEPALIVE_HEADER,
    BLOCKS_PATH,
    FORWARDED_HEADER,
    KEEPALIVE,
    ONLY_CACHED_HEADER,
    block_query,
)

if TYPE_CHECKING:
    from edgecache.pool._node import PoolNode

__all__ = ["AskFailed", "AskMissed", "PeerSessions", "PeerSource", "ask_block"]

log = logging.getLogger(__name__)


class AskMissed(Exception):
    """The peer answered but does not serve this block (it is alive)."""


class AskFailed(Exception):
    """The peer did not answer usefully (down, slow, damaged): leave it out for a while."""


class PeerSource:
    """Asks the owner of a block among the pool's live members (see module docstring)."""

    name = "peer"

    def __init__(self, node: PoolNode, engine: ReadEngine) -> None:
        self._node = node
        self._engine = engine

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        if is_forwarded():
            raise SourceSkipped("a block a peer asked for is never forwarded again")
        if not self._node.running:
            raise SourceSkipped("the pool node is stopped")
        membership = self._node.membership
        me = membership.me
        digest = plan.key(index).digest
        live = membership.live()
        owner = owner_of(digest, live)
        online = self._engine.health.online
        if owner is not None and owner != me:
            data = await self._try(owner, plan, index, only_cached=not online)
            if data is not None:
                return data
        raise SourceSkipped(f"block {index} of {plan.path}: its owner does not serve it")

    async def fetch_held(self, plan: ReadPlan, index: int) -> bytes:
        """This node's backend is unreachable: the block from any live peer that holds it
        (the owner may be dead or may have changed), best-ranked first."""
        if is_forwarded() or not self._node.running:
            raise SourceSkipped("not asking peers")
        membership = self._node.membership
        for member in ranked(plan.key(index).digest, membership.live()):
            if member != membership.me:
                data = await self._try(member, plan, index, only_cached=True)
                if data is not None:
                    return data
        raise SourceSkipped(f"block {index} of {plan.path}: no live peer holds it")

    async def _try(
        self, member: Member, plan: ReadPlan, index: int, *, only_cached: bool
    ) -> bytes | None:
        membership = self._node.membership
        try:
            data = await self._ask(member, plan, index, only_cached=only_cached)
        except AskMissed:
            PEER_REQUESTS.labels("asked", "miss").inc()
            membership.cleared(member)
            return None
        except AskFailed as exc:
            log.info("pool peer %s (%s) skipped: %s", member.name, member.address, exc)
            membership.suspect(member)
            return None
        membership.cleared(member)
        PEER_REQUESTS.labels("asked", "hit").inc()
        PEER_HITS.inc()
        PEER_BYTES_RECEIVED.inc(len(data))
        return data

    async def _ask(self, member: Member, plan: ReadPlan, index: int, *, only_cached: bool) -> bytes:
        headers = {FORWARDED_HEADER: "1", **self._node.request_headers()}
        if only_cached:
            headers[ONLY_CACHED_HEADER] = "1"
        return await ask_block(
            self._node.sessions.session(),
            member.address,
            plan,
            index,
            headers=headers,
            timeouts=self._node.settings.timeouts,
        )


class PeerSessions:
    """One HTTP session per event loop for asking block servers (a session is bound to the
    loop it was made on, and engines run on loops of their own), made on first use there.

    ``connect_seconds``: the connect timeout (the whole request has none: a block's transfer
    is watched by :func:`ask_block`'s own timeouts). Frames are LZ4 of their own, so the
    session never decompresses; up to 32 requests to one server at a time (an engine's
    parallel block fetches)."""

    def __init__(self, *, connect_seconds: float) -> None:
        self._connect_seconds = connect_seconds
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()

    def session(self) -> aiohttp.ClientSession:
        """The session of the running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.get(loop)
            if session is None or session.closed:
                session = self._sessions[loop] = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_seconds),
                    connector=aiohttp.TCPConnector(limit_per_host=32),
                    auto_decompress=False,
                )
            return session

    async def close(self) -> None:
        """Close every session, each on its own loop (one already closed is left alone)."""
        with self._lock:
            sessions, self._sessions = dict(self._sessions), {}
        current = asyncio.get_running_loop()
        for loop, session in sessions.items():
            if loop is current:
                await session.close()
            elif not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(session.close(), loop)
                await asyncio.wrap_future(future)


async def ask_block(
    session: aiohttp.ClientSession,
    address: str,
    plan: ReadPlan,
    index: int,
    *,
    headers: dict[str, str],
    timeouts: PeerTimeouts,
) -> bytes:
    """Block ``index`` of ``plan`` from the block server at ``address`` (the protocol of
    :mod:`edgecache.pool._wire`; ``headers``: the token, the priority and what the asker
    asks for), verified; AskMissed (404) or AskFailed (anything else), counted."""
    headers = {ACCEPT_COMPRESSION_HEADER: "lz4", ACCEPT_KEEPALIVE_HEADER: "1", **headers}
    key = plan.key(index)
    url = f"http://{address}{BLOCKS_PATH}{key.digest}"
    try:
        async with asyncio.timeout(timeouts.connect_seconds + timeouts.first_byte_seconds):
            response = await session.get(url, params=block_query(plan, index), headers=headers)
    except TimeoutError as exc:
        PEER_REQUESTS.labels("asked", "timeout").inc()
        raise AskFailed("no answer in time") from exc
    except (aiohttp.ClientError, OSError) as exc:
        PEER_REQUESTS.labels("asked", "refused").inc()
        raise AskFailed(f"cannot connect: {exc}") from exc
    async with response:
        if response.status == 404:
            raise AskMissed()
        if response.status != 200:
            result = "unauthorized" if response.status == 401 else "error"
            PEER_REQUESTS.labels("asked", result).inc()
            if response.status == 401:
                log.warning(
                    "pool peer %s refused our token (401): do the pool's token files match?",
                    address,
                )
            raise AskFailed(f"answered {response.status}")
        try:
            frame = await _body(response, silence_seconds=timeouts.transfer_seconds)
        except TimeoutError as exc:
            PEER_REQUESTS.labels("asked", "timeout").inc()
            raise AskFailed("the block did not arrive in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            PEER_REQUESTS.labels("asked", "error").inc()
            raise AskFailed(f"the transfer broke off: {exc}") from exc
    length = plan.block_length(index)
    try:
        data = await asyncio.to_thread(
            decode_block_bytes, frame, digest=key.digest, max_raw_len=length
        )
    except CorruptBlockError as exc:
        PEER_REQUESTS.labels("asked", "corrupt").inc()
        raise AskFailed(f"damaged block: {exc}") from exc
    if len(data) != length:
        PEER_REQUESTS.labels("asked", "corrupt").inc()
        raise AskFailed(f"block of {len(data)} bytes, expected {length}")
    return data


async def _body(response: aiohttp.ClientResponse, *, silence_seconds: float) -> bytes:
    """The block frame of a 200 answer, without the owner's keepalive newlines before it;
    TimeoutError when nothing at all arrives for ``silence_seconds`` (a stuck owner: a busy
    one sends keepalives while its fetch waits on its link)."""
    chunks: list[bytes] = []
    while True:
        async with asyncio.timeout(silence_seconds):
            chunk = await response.content.readany()
        if not chunk:
            return b"".join(chunks)
        if not chunks:
            chunk = chunk.lstrip(KEEPALIVE)
            if not chunk:
                continue
        chunks.append(chunk)
