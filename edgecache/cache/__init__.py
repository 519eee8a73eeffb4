"""The tiered block cache: MEM and SSD tiers under quota, shared safely by a node's processes.

Public API (everything else in this package is private)::

    TieredCache(settings)        get(key, fetch) / get_cached(key) / open_block(key) / put /
                                 invalidate / pin / stats
    BlockKey(backend, path, version, index, block_size)
    Fetched(data, source)        a block a fetch got from a peer (not counted as backend bytes)
    encode_block / decode_block_bytes  the self-checking block format (SSD files, the pool's wire)
    eviction.EvictionPolicy, S3FIFOPolicy, LRUPolicy

``cache`` knows nothing of fsspec, backends or Kubernetes: it stores bytes by key.
"""

from __future__ import annotations

from edgecache.cache._blockfile import decode_block_bytes, encode_block
from edgecache.cache._keys import BlockKey
from edgecache.cache.eviction import EvictionPolicy, LRUPolicy, S3FIFOPolicy
from edgecache.cache.tiered import BlockFetcher, Fetched, OpenBlock, TieredCache

__all__ = [
    "BlockFetcher",
    "BlockKey",
    "EvictionPolicy",
    "Fetched",
    "LRUPolicy",
    "OpenBlock",
    "S3FIFOPolicy",
    "TieredCache",
    "decode_block_bytes",
    "encode_block",
]
