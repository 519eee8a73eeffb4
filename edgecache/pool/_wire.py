"""The peer protocol: how one node asks another for a block, and what comes back.

One request per block::

    GET /v1/blocks/<key digest>?backend=..&path=..&version=..&size=..&block_size=..&index=..
    Authorization: Bearer <pool token>
    X-EdgeCache-Forwarded: 1            the asker chose this node as owner: never forward it on
    X-EdgeCache-Accept-Compression: lz4 the asker decodes LZ4 (sent only when it does)
    X-EdgeCache-Only-Cached: 1          serve it only if held (the asker's cloud is offline)
    X-EdgeCache-Priority: foreground    whose WAN fetch this is (WAN QoS, edgecache.engine)
    X-EdgeCache-Accept-Keepalive: 1     the asker skips newlines before the block (below)

The query names the block by the engine's own key (backend identity, object path, object
version, block size, index) plus the object size; the server rebuilds the key and refuses (400)
a request whose digest does not match it, so a peer never serves another version than the one
asked for: the version is part of the key, and the owner's own fetch asks the backend for that
version (``If-Match``). Answers:

    200  the block in the SSD block format (header with raw length, xxh3-64 checksum and key
         digest; LZ4 frame inside when the asker accepts it and it saves): the receiver checks
         all of it, so a damaged or truncated transfer is a skip, never bad bytes
    404  not held, and not fetched (only-cached asked, or this node's backend is offline)
    401  no token or a wrong one (nothing else is said)
    400  a malformed request; 409 the object changed under that version

The owner sends its status line as soon as it has decided to serve (before its WAN fetch), so
the asker's first-byte timeout measures whether the peer is alive, not how long the WAN takes.
While its fetch waits (for its turn on the link under WAN QoS: a background block may wait
minutes behind foreground reads, a cap or a time window) and runs, it sends one newline every
:data:`KEEPALIVE_SECONDS` to an asker that accepts them: the asker's transfer timeout is then
a silence timeout, which tells a stuck owner from one that is still waiting in its queue (the
block format starts with ``ECB1``, so the newlines before it are unambiguous).
"""

from __future__ import annotations

from collections.abc import Mapping

from edgecache.engine import ReadPlan
from edgecache.errors import ConfigError

__all__ = [
    "ACCEPT_COMPRESSION_HEADER",
    "ACCEPT_KEEPALIVE_HEADER",
    "BLOCKS_PATH",
    "BLOCK_CONTENT_TYPE",
    "FORWARDED_HEADER",
    "KEEPALIVE",
    "KEEPALIVE_SECONDS",
    "ONLY_CACHED_HEADER",
    "block_query",
    "plan_from_query",
]

BLOCKS_PATH = "/v1/blocks/"
FORWARDED_HEADER = "X-EdgeCache-Forwarded"
ACCEPT_COMPRESSION_HEADER = "X-EdgeCache-Accept-Compression"
ONLY_CACHED_HEADER = "X-EdgeCache-Only-Cached"
ACCEPT_KEEPALIVE_HEADER = "X-EdgeCache-Accept-Keepalive"
KEEPALIVE = b"\n"
KEEPALIVE_SECONDS = 2.0
"""Between two keepalive newlines of an owner whose fetch for the asker is not done yet: well
inside the asker's silence timeout (``PeerTimeouts.transfer_seconds``)."""
BLOCK_CONTENT_TYPE = "application/vnd.edgecache.block"


def block_query(plan: ReadPlan, index: int) -> dict[str, str]:
    """The query naming block ``index`` of ``plan``."""
    return {
        "backend": plan.backend,
        "path": plan.path,
        "version": plan.version,
        "size": str(plan.size),
        "block_size": str(plan.block_size),
        "index": str(index),
    }


def plan_from_query(digest: str, query: Mapping[str, str]) -> tuple[ReadPlan, int]:
    """The plan and block index a request names; ConfigError when it is malformed or its
    digest is not the key's."""
    try:
        size, block_size, index = (int(query[k]) for k in ("size", "block_size", "index"))
        plan = ReadPlan(query["backend"], query["path"], query["version"], size, block_size)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"malformed block request: {exc}") from exc
    if block_size <= 0 or not 0 <= index < plan.block_count:
        raise ConfigError("block index or size out of range")
    if plan.key(index).digest != digest:
        raise ConfigError("the digest is not the key's")
    return plan, index
