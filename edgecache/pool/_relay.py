"""AgentRelay: an ``edgecache::`` reader process (a pod) gets its blocks through its node's
agent, and so from the whole nodepool.

Place in the data path::

    reader's ReadEngine --miss (MEM, SSD)--> AgentRelay (before single-flight and the lock)
        --GET /v1/blocks/<digest> (not forwarded)--> the node agent's PeerServer
              its tiers, its views --> the block
              else its engine: HolderSource, PeerSource (the block's owner), its backend
        404 / down / slow --> skip: the reader's own sources (its backend, over the WAN)

The agent's block server already serves the pool; a request that is *not* marked forwarded
is fetched the way the agent reads itself: from the block's owner in the pool, or over the
WAN by the agent when it owns the block (and kept there for the pool). So a pod's reads cost
the WAN what the agent's would: nothing for what any node of the pool holds.

It is asked before the reader's single-flight and cross-process block lock
(:meth:`~edgecache.engine.ReadEngine.add_relay`): a pod that mounts the agent's cache
directory shares its block locks, and the agent storing the block would otherwise wait for
the lock the reader holds while it waits for the agent.

Configured from the pod's environment (the node's agent is at a fixed host port):
``EDGECACHE_POOL_AGENT=HOST:PORT`` (the agent's ``--peer-listen``, e.g. ``$(NODE_IP):10270``)
and ``EDGECACHE_POOL_TOKEN_FILE`` (the pool's token Secret mounted in the pod). Without
``EDGECACHE_POOL_AGENT`` nothing changes. A process that runs a :class:`PoolNode` itself (the
agent) never relays: its engines ask the pool directly.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from edgecache.addresses import parse_address
from edgecache.engine import (
    PRIORITY_HEADER,
    ReadEngine,
    ReadPlan,
    SourceSkipped,
    current_priority,
    when_engine_opens,
)
from edgecache.errors import ConfigError
from edgecache.k8s import ConnectionSettings, TokenSource
from edgecache.metrics import PEER_BYTES_RECEIVED, PEER_HITS, PEER_REQUESTS
from edgecache.pool._context import is_forwarded, is_serving
from edgecache.pool._settings import PeerTimeouts
from edgecache.pool._source import AskFailed, AskMissed, PeerSessions, ask_block

__all__ = ["AGENT_ENV", "TOKEN_FILE_ENV", "AgentRelay", "relay_from_environment"]

log = logging.getLogger(__name__)

AGENT_ENV = "EDGECACHE_POOL_AGENT"
TOKEN_FILE_ENV = "EDGECACHE_POOL_TOKEN_FILE"


class AgentRelay:
    """Asks the node's agent for a block (see module docstring)."""

    name = "peer"

    def __init__(
        self, address: str, tokens: TokenSource, timeouts: PeerTimeouts | None = None
    ) -> None:
        parse_address(address, option=AGENT_ENV)
        self.address = address
        self._tokens = tokens
        self._timeouts = timeouts or PeerTimeouts()
        self._sessions = PeerSessions(connect_seconds=self._timeouts.connect_seconds)
        self._down_until = 0.0

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        # The agent itself (a PoolNode in this process, a request it serves) never relays.
        if is_forwarded() or is_serving() or _pool_node_running():
            raise SourceSkipped("this process is a pool node")
        if time.monotonic() < self._down_until:
            raise SourceSkipped("the node's agent failed lately")
        headers = {PRIORITY_HEADER: current_priority().value}
        token = self._tokens.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            data = await ask_block(
                self._sessions.session(),
                self.address,
                plan,
                index,
                headers=headers,
                timeouts=self._timeouts,
            )
        except AskMissed as exc:
            PEER_REQUESTS.labels("asked", "miss").inc()
            raise SourceSkipped("the node's agent does not serve it") from exc
        except AskFailed as exc:
            log.info("node agent %s skipped: %s", self.address, exc)
            self._down_until = time.monotonic() + self._timeouts.cooldown_seconds
            raise SourceSkipped(f"the node's agent: {exc}") from exc
        PEER_REQUESTS.labels("asked", "hit").inc()
        PEER_HITS.inc()
        PEER_BYTES_RECEIVED.inc(len(data))
        return data


_running_nodes = 0
_installed: dict[str, AgentRelay] = {}
_install_lock = threading.Lock()


def note_pool_node(delta: int) -> None:
    """A :class:`PoolNode` started (+1) or stopped (-1) in this process."""
    global _running_nodes
    _running_nodes += delta


def _pool_node_running() -> bool:
    return _running_nodes > 0


def relay_from_environment() -> AgentRelay | None:
    """Make every read engine of this process ask the node's agent first when
    ``EDGECACHE_POOL_AGENT`` says where it is (once per process; the relay, or None)."""
    address = os.environ.get(AGENT_ENV, "").strip()
    if not address:
        return None
    with _install_lock:
        relay = _installed.get(address)
        if relay is not None:
            return relay
        token_file = os.environ.get(TOKEN_FILE_ENV, "").strip()
        tokens = TokenSource(ConnectionSettings(token_file=token_file or None))
        if token_file and not tokens.token():
            raise ConfigError(f"{TOKEN_FILE_ENV}={token_file}: no token in it")
        relay = _installed[address] = AgentRelay(address, tokens)

    def attach(engine: ReadEngine) -> None:
        if engine.backend.remote:
            engine.add_relay(relay)

    when_engine_opens(attach)
    return relay
