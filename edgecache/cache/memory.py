"""The MEM tier: the fastest tier, a byte-bounded map of block digests to bytes, per process.

:class:`~edgecache.cache.tiered.TieredCache` looks here first. Inserting past the quota evicts by
the configured policy and hands the evicted blocks back so the caller can demote them to the SSD
tier. Safe to use from several threads (the fs layer's event loop and user threads reading hits).
"""

from __future__ import annotations

import threading

from edgecache.cache._keys import BlockKey
from edgecache.cache.eviction import EvictionPolicy, MemoryPolicyStore
from edgecache.metrics import CACHE_EVICTIONS, CACHE_QUOTA_BYTES, CACHE_USAGE_BYTES

__all__ = ["MemoryTier"]


class MemoryTier:
    """Blocks in process memory, bounded by ``quota_bytes``."""

    def __init__(self, *, quota_bytes: int, policy: EvictionPolicy) -> None:
        self.quota_bytes = quota_bytes
        self._policy = policy
        self._store = MemoryPolicyStore()
        self._data: dict[str, tuple[BlockKey, bytes]] = {}
        self._lock = threading.Lock()
        CACHE_QUOTA_BYTES.labels("mem").set(quota_bytes)

    @property
    def usage_bytes(self) -> int:
        """Bytes of block data held now."""
        return self._store.total_bytes()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, digest: object) -> bool:
        return digest in self._data

    def get(self, digest: str) -> bytes | None:
        """The block's bytes, or None; a hit counts for the eviction policy."""
        with self._lock:
            entry = self._data.get(digest)
            if entry is None:
                return None
            self._store.touch(self._policy, digest)
            return entry[1]

    def put(self, key: BlockKey, data: bytes) -> list[tuple[BlockKey, bytes]]:
        """Keep ``data``; return the blocks evicted to make room, for demotion."""
        digest = key.digest
        size = len(data)
        if size > self.quota_bytes:
            return []
        with self._lock:
            if digest in self._data:
                return []
            evicted: list[tuple[BlockKey, bytes]] = []
            overflow = self._store.total_bytes() + size - self.quota_bytes
            if overflow > 0:
                for entry in self._policy.evict(self._store, overflow):
                    evicted.append(self._data.pop(entry.key))
                CACHE_EVICTIONS.labels("mem").inc(len(evicted))
            queue, freq = self._policy.admit(self._store, digest)
            self._store.insert(digest, size, queue, freq)
            self._data[digest] = (key, data)
            CACHE_USAGE_BYTES.labels("mem").set(self._store.total_bytes())
            return evicted

    def discard(self, digest: str) -> None:
        """Forget a block (its object changed or was deleted)."""
        with self._lock:
            if self._data.pop(digest, None) is not None:
                self._store.remove(digest)
                CACHE_USAGE_BYTES.labels("mem").set(self._store.total_bytes())

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            for digest in list(self._data):
                self._store.remove(digest)
            self._data.clear()
            CACHE_USAGE_BYTES.labels("mem").set(0)
