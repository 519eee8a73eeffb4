"""Nodepool cache sharing: each block crosses the WAN once per pool.

Place in the data path (see ``docs/pool.md``)::

    ReadEngine --miss--> PeerSource --> the block's owner (rendezvous hashing over the live
        members) --> its PeerServer: its tiers, else its one WAN fetch for the whole pool
      --skip (owner is us, peer dead/slow/missing it)--> BackendSource (WAN)

Public API (everything else in this package is private)::

    PoolNode(settings)                 server + membership + a PeerSource on every engine
    PoolSettings, PeerTimeouts, LeaseSettings
    Member, Membership, StaticMembership, LeaseMembership
    owner_of, ranked                   rendezvous hashing
    FORWARDED_HEADER ...               the wire's header names (edgecache.pool._wire)
"""

from __future__ import annotations

from edgecache.pool._hashing import owner_of, ranked
from edgecache.pool._leases import LeaseMembership
from edgecache.pool._members import Member, Membership, StaticMembership, parse_member
from edgecache.pool._node import PoolNode
from edgecache.pool._relay import AGENT_ENV, TOKEN_FILE_ENV, AgentRelay, relay_from_environment
from edgecache.pool._settings import LeaseSettings, PeerTimeouts, PoolSettings
from edgecache.pool._wire import (
    ACCEPT_COMPRESSION_HEADER,
    ACCEPT_KEEPALIVE_HEADER,
    BLOCKS_PATH,
    FORWARDED_HEADER,
    KEEPALIVE,
    ONLY_CACHED_HEADER,
)

__all__ = [
    "ACCEPT_COMPRESSION_HEADER",
    "ACCEPT_KEEPALIVE_HEADER",
    "AGENT_ENV",
    "BLOCKS_PATH",
    "FORWARDED_HEADER",
    "KEEPALIVE",
    "ONLY_CACHED_HEADER",
    "TOKEN_FILE_ENV",
    "AgentRelay",
    "LeaseMembership",
    "LeaseSettings",
    "Member",
    "Membership",
    "PeerTimeouts",
    "PoolNode",
    "PoolSettings",
    "StaticMembership",
    "owner_of",
    "parse_member",
    "ranked",
    "relay_from_environment",
]
