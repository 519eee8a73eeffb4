"""The MEM tier: the fastest tier, a byte-bounded map of block digests to bytes, per process.

:class:`~edgecache.cache.tiered.TieredCache` looks here first. Inserting past the quota evicts by
the configured policy and hands the evicted blocks back so the caller can demote them to the SSD
tier. Safe to use from several threads (the fs layer's event loop and user threads reading hits).

Besides the blocks it keeps under its quota, the tier holds the last few blocks verified from
the SSD tier (its *read buffer*, a small LRU outside the quota and outside the eviction
policy): reads of the other parts of a block that was just read from disk and checked (1 MiB
reads of a 4 MiB block, ``cat_file`` of neighbouring ranges) are served from memory instead of
reading and hashing the whole block again for each, even with ``mem_quota=0``. Bytes in the
buffer were verified after they were read from disk; a later read from disk verifies again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from edgecache.cache._keys import BlockKey
from edgecache.cache.eviction import EvictionPolicy, MemoryPolicyStore, show_policy
from edgecache.metrics import CACHE_EVICTIONS, CACHE_QUOTA_BYTES, CACHE_USAGE_BYTES

__all__ = ["HeldBlock", "MemoryTier"]


class MemoryTier:
    """Blocks in process memory, bounded by ``quota_bytes``."""

    def __init__(
        self, *, quota_bytes: int, policy: EvictionPolicy, read_buffer_bytes: int = 0
    ) -> None:
        self.quota_bytes = quota_bytes
        self.read_buffer_bytes = read_buffer_bytes
        """Bound of the read buffer (blocks just verified from SSD), outside ``quota_bytes``."""
        self._policy = policy
        self._store = MemoryPolicyStore()
        self._data: dict[str, tuple[BlockKey, bytes]] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_bytes = 0
        self._lock = threading.Lock()
        CACHE_QUOTA_BYTES.labels("mem").set(quota_bytes)
        show_policy("mem", policy)

    @property
    def usage_bytes(self) -> int:
        """Bytes of block data held now."""
        return self._store.total_bytes()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, digest: object) -> bool:
        return digest in self._data or digest in self._recent

    def get(self, digest: str) -> bytes | None:
        """The block's bytes (kept, or in the read buffer), or None; a hit on a kept block
        counts for the eviction policy."""
        with self._lock:
            entry = self._data.get(digest)
            if entry is not None:
                self._store.touch(self._policy, digest)
                return entry[1]
            data = self._recent.get(digest)
            if data is not None:
                self._recent.move_to_end(digest)
            return data

    def hold(self, digest: str, data: bytes) -> None:
        """Put a block just verified from the SSD tier in the read buffer (the least recently
        used ones leave it); a block larger than the buffer is not held."""
        size = len(data)
        if size > self.read_buffer_bytes:
            return
        with self._lock:
            if digest in self._data or digest in self._recent:
                return
            self._recent[digest] = data
            self._recent_bytes += size
            while self._recent_bytes > self.read_buffer_bytes:
                self._recent_bytes -= len(self._recent.popitem(last=False)[1])

    def _drop_recent(self, digest: str) -> None:
        data = self._recent.pop(digest, None)
        if data is not None:
            self._recent_bytes -= len(data)

    def put(self, key: BlockKey, data: bytes) -> list[tuple[BlockKey, bytes]]:
        """Keep ``data``; return the blocks evicted to make room, for demotion."""
        digest = key.digest
        size = len(data)
        if size > self.quota_bytes:
            return []
        with self._lock:
            if digest in self._data:
                return []
            self._drop_recent(digest)
            evicted = self._evict(self._store.total_bytes() + size - self.quota_bytes)
            queue, freq = self._policy.admit(self._store, digest)
            self._store.insert(digest, size, queue, freq)
            self._data[digest] = (key, data)
            CACHE_USAGE_BYTES.labels("mem").set(self._store.total_bytes())
            return evicted

    def apply(self, *, quota_bytes: int, policy: EvictionPolicy) -> list[tuple[BlockKey, bytes]]:
        """Bound the tier by ``quota_bytes`` and evict by ``policy`` from now on; returns the
        blocks a lowered bound evicted, for demotion. The blocks held keep their queues: every
        policy evicts from both (see :class:`~edgecache.cache.eviction.LRUPolicy`)."""
        with self._lock:
            self.quota_bytes = quota_bytes
            self._policy = policy
            CACHE_QUOTA_BYTES.labels("mem").set(quota_bytes)
            show_policy("mem", policy)
            return self._evict(self._store.total_bytes() - quota_bytes)

    def _evict(self, overflow: int) -> list[tuple[BlockKey, bytes]]:
        """Evict at least ``overflow`` bytes by the policy (none when it is not positive) and
        return the blocks evicted. The caller holds the lock."""
        if overflow <= 0:
            return []
        evicted = [self._data.pop(entry.key) for entry in self._policy.evict(self._store, overflow)]
        CACHE_EVICTIONS.labels("mem").inc(len(evicted))
        CACHE_USAGE_BYTES.labels("mem").set(self._store.total_bytes())
        return evicted

    def discard(self, digest: str) -> None:
        """Forget a block (its object changed or was deleted)."""
        with self._lock:
            self._drop_recent(digest)
            if self._data.pop(digest, None) is not None:
                self._store.remove(digest)
                CACHE_USAGE_BYTES.labels("mem").set(self._store.total_bytes())

    def clear_read_buffer(self) -> None:
        """Let go of the blocks held only in the read buffer (kept blocks stay)."""
        with self._lock:
            self._recent.clear()
            self._recent_bytes = 0

    def clear(self) -> None:
        """Drop everything (the read buffer too)."""
        with self._lock:
            for digest in list(self._data):
                self._store.remove(digest)
            self._data.clear()
            self._recent.clear()
            self._recent_bytes = 0
            CACHE_USAGE_BYTES.labels("mem").set(0)


class HeldBlock:
    """A block in process memory, read in parts like an open SSD block (the same methods as
    :class:`~edgecache.cache._blockfile.BlockFile`): a block of the MEM tier, or one just
    fetched."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)
        """The block's length."""

    def read(self, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)``: the block itself when that is all of it (no copy)."""
        data = self._data
        return data if (lo, hi) == (0, len(data)) else data[lo:hi]

    def read_into(self, lo: int, out: memoryview) -> bool:
        """Put bytes ``[lo, lo + len(out))`` into ``out`` (always True: memory is not damaged
        the way a disk is)."""
        out[:] = memoryview(self._data)[lo : lo + len(out)]
        return True

    def close(self) -> None:
        """Let go of the bytes."""
        self._data = b""
