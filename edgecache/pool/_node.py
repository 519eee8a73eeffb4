"""PoolNode: one node's part in its nodepool's cache sharing, put together.

    PoolNode.start()
      token (Secret file) --> PeerServer on --peer-listen (serves this node's blocks)
      Membership: static --peers list, or Leases through the hub (edgecache.pool._leases)
      when_engine_opens --> every read engine of the process gets a HolderSource (the
                        node's views) and a PeerSource (asks owners), and is served by the
                        PeerServer under its backend identity

The agent makes one and starts it on its loop; tests and benchmarks use it directly. The
server answers on the loop it was started on; the peer sources run on each engine's loop and
keep one HTTP session per loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from edgecache.engine import PRIORITY_HEADER, ReadEngine, current_priority, when_engine_opens
from edgecache.errors import ConfigError
from edgecache.k8s import ConnectionSettings, TokenSource
from edgecache.pool._holders import HolderSource
from edgecache.pool._members import Member, Membership, StaticMembership, parse_member
from edgecache.pool._relay import note_pool_node
from edgecache.pool._server import BlockHolder, PeerServer
from edgecache.pool._settings import PoolSettings
from edgecache.pool._source import PeerSessions, PeerSource

__all__ = ["PoolNode"]

log = logging.getLogger(__name__)


class PoolNode:
    """Serves this node's blocks to its peers and asks them for blocks (module docstring).

    ``membership``: how members are found; None builds a static one from ``settings.peers``
    (the Lease membership needs an API connection: :func:`edgecache.pool.lease_membership`
    builds it, after :meth:`start` has bound the server and knows its address)."""

    def __init__(
        self,
        settings: PoolSettings,
        *,
        membership: Callable[[Member], Membership] | None = None,
    ) -> None:
        settings.check()
        self.settings = settings
        self.tokens = TokenSource(ConnectionSettings(token_file=settings.token_file or None))
        self._make_membership = membership
        self._membership: Membership | None = None
        self._engines: dict[str, list[ReadEngine]] = {}
        self._lock = threading.Lock()
        self.sessions = PeerSessions(connect_seconds=settings.timeouts.connect_seconds)
        """The HTTP sessions this node's peer sources ask owners with."""
        self._stop_hook: Callable[[], None] | None = None
        self.holders: list[BlockHolder] = []
        """Where else this node keeps whole objects (:meth:`add_holder`)."""
        self.server: PeerServer | None = None
        self.running = False

    @property
    def membership(self) -> Membership:
        if self._membership is None:
            raise RuntimeError("the pool node is not started")
        return self._membership

    @property
    def me(self) -> Member:
        """This node as its peers know it."""
        return self.membership.me

    # --- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the token, bind and start the server, join the pool, hook every engine."""
        s = self.settings
        if s.token_file and not self.tokens.token():
            raise ConfigError(
                f"--peer-token-file {s.token_file}: no token in it (unreadable or empty)"
            )
        address = s.advertise
        if s.listen:
            self.server = PeerServer(
                listen=s.listen,
                tokens=self.tokens,
                engine_of=self.engine_of,
                holders=self.holders,
                compression=s.compression,
            )
            await self.server.start()
            address = s.advertise or self.server.address
        if not address:
            raise ConfigError("the pool needs --advertise HOST:PORT (or --peer-listen)")
        me = Member(s.node_name, address)
        if self._make_membership is not None:
            self._membership = self._make_membership(me)
        else:
            peers = [parse_member(p, option="--peers") for p in s.peers]
            self._membership = StaticMembership(
                me, peers, cooldown_seconds=s.timeouts.cooldown_seconds
            )
        await self._membership.start()
        self.running = True
        note_pool_node(+1)
        self._stop_hook = when_engine_opens(self.attach)
        log.info("pool %s: node %s serving at %s", s.pool or "(static)", me.name, me.address)

    async def stop(self) -> None:
        """Leave the pool: unhook engines (their peer sources skip from now on), stop the
        server and the membership, close the HTTP sessions."""
        if self.running:
            note_pool_node(-1)
        self.running = False
        if self._stop_hook is not None:
            self._stop_hook()
            self._stop_hook = None
        if self._membership is not None:
            await self._membership.stop()
        if self.server is not None:
            await self.server.stop()
        await self.sessions.close()

    async def __aenter__(self) -> PoolNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- engines -------------------------------------------------------------------------------
    def attach(self, engine: ReadEngine) -> None:
        """Ask this node's holders, then peers, for ``engine``'s missing blocks, and serve its
        blocks to peers."""
        with self._lock:
            engines = self._engines.setdefault(engine.identity, [])
            engines[:] = [e for e in engines if not e.closed]
            if engine in engines:
                return
            engines.append(engine)
        engine.add_source(PeerSource(self, engine))
        # Asked first (sources added later go first): a block a view keeps needs no peer.
        engine.add_source(HolderSource(self.holders))

    def add_holder(self, holder: BlockHolder) -> None:
        """Serve blocks from ``holder`` too when the cache tiers do not have them (the agent
        serves its materialised views: their blocks leave the cache once copied)."""
        self.holders.append(holder)

    def engine_of(self, identity: str) -> ReadEngine | None:
        """An open engine of this process for backend ``identity`` (None: none)."""
        with self._lock:
            return next((e for e in self._engines.get(identity, []) if not e.closed), None)

    # --- for the peer sources ------------------------------------------------------------------
    def request_headers(self) -> dict[str, str]:
        """Headers every peer request carries: the token and the asker's WAN priority (the
        owner's fetch on its behalf then waits, or not, as the asker's own would)."""
        headers = {PRIORITY_HEADER: current_priority().value}
        token = self.tokens.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers
