"""Settings of nodepool sharing: where this node's block server is, who its peers are, how long
a peer may take. Filled from ``edgecache agent`` flags (``--peer-listen``, ``--advertise``,
``--peer-token-file``, ``--peers``) or built directly (tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgecache.addresses import parse_address
from edgecache.errors import ConfigError
from edgecache.pool._members import parse_member

__all__ = ["LeaseSettings", "PeerTimeouts", "PoolSettings"]


@dataclass
class PeerTimeouts:
    """How long a peer may take before the block is fetched from the backend instead."""

    connect_seconds: float = 0.3
    """TCP connect to a peer. On a site's LAN a connect takes well under a millisecond; a
    peer that cannot be connected within 0.3 s is down or unreachable."""
    first_byte_seconds: float = 1.0
    """From the request to the owner's status line. The owner answers before any WAN fetch
    of its own, so this measures whether it is alive: about one 4 MiB block time at ~35
    Mbit/s, the cost the brief allows for a slow peer."""
    transfer_seconds: float = 30.0
    """Longest silence from the status line to the end of the block. The owner may wait a
    long time for its turn on the WAN (a background block behind foreground reads, a cap, a
    time window) and then fetch for the whole pool; meanwhile it sends a keepalive byte every
    2 s, so only an owner that stopped (SIGSTOP, a wedged process) is silent this long; and a
    stuck peer cannot wedge reads."""
    cooldown_seconds: float = 5.0
    """A peer that failed (refused, timed out, sent a damaged block) is left out this long,
    so a dead peer costs one timeout, not one per block, until membership drops it."""


@dataclass
class LeaseSettings:
    """Membership from ``coordination.k8s.io/v1`` Leases, one per agent, through the hub."""

    namespace: str = "edgecache-system"
    """Namespace of the pool Leases (the agent's own namespace in a pod)."""
    renew_seconds: float = 2.0
    """Between renewals of our Lease and listings of the pool's Leases."""
    duration_seconds: float = 8.0
    """A member whose Lease was not renewed for this long (by our clock: the time since we
    saw its renewTime change) is dropped; 4 renewals, so one slow renewal does not drop a
    live node, and a dead one is gone within ~10 s."""
    user_agent: str = "edgecache-agent/pool"
    """The hub records answers per User-Agent prefix; ``edgecache-agent`` is recorded by
    default, so the pool's listings are answered offline too."""


@dataclass
class PoolSettings:
    """One node's part in its nodepool's cache sharing."""

    node_name: str = ""
    """This node's name (the Lease holder; the hashing name unless a static entry renames it)."""
    pool: str = ""
    """Nodepool name (``apps.openyurt.io/nodepool`` of the node); only members of the same
    pool share blocks."""
    listen: str = ""
    """``HOST:PORT`` the block server binds (port 0: any free port); empty: no server."""
    advertise: str = ""
    """``HOST:PORT`` peers reach the server at; empty: the bound address."""
    token_file: str = ""
    """File holding the pool's shared token (a mounted Secret); re-read when it changes."""
    peers: list[str] = field(default_factory=list)
    """Static members, ``[NAME=]HOST:PORT`` each (this node may be listed too); empty: Leases
    through the Kubernetes API."""
    compression: str = "auto"
    """LZ4 on the wire: ``auto`` (where a 64 KiB sample says it pays), ``lz4``, ``none``."""
    timeouts: PeerTimeouts = field(default_factory=PeerTimeouts)
    leases: LeaseSettings = field(default_factory=LeaseSettings)

    def check(self) -> None:
        """ConfigError for settings no pool node can run with."""
        if self.compression not in ("auto", "lz4", "none"):
            raise ConfigError(
                f"pool compression must be auto, lz4 or none, not {self.compression!r}"
            )
        if self.listen and not self.token_file:
            raise ConfigError(
                "--peer-listen needs --peer-token-file: the block server never serves "
                "without a token"
            )
        if not self.node_name:
            raise ConfigError("the pool needs this node's name")
        if self.listen:
            parse_address(self.listen, option="--peer-listen")
        if self.advertise:
            parse_address(self.advertise, option="--advertise")
        for entry in self.peers:
            parse_member(entry, option="--peers")
