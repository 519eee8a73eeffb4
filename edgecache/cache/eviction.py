"""Eviction policies: which block leaves a full tier.

Both tiers evict through the same policy objects. A policy never touches files or sqlite itself:
it works on a :class:`PolicyStore` (queues of entries ordered by insertion, per-entry access
frequency, a ghost list of recently evicted keys). The MEM tier uses :class:`MemoryPolicyStore`;
the SSD tier implements the protocol over its sqlite index so the policy's state is shared by
every process and survives restarts. One implementation of each policy serves both.

Policies:

* ``s3fifo`` (default) -- S3-FIFO (Yang et al., SOSP 2023): new blocks enter a small FIFO (10%
  of the tier); only blocks hit again while there move to the main FIFO, whose blocks are
  re-inserted while they keep being hit. One-off scans pass through the small queue without
  flushing the hot set; a block evicted from the small queue and soon read again (ghost hit) is
  admitted straight to main. Measured against LRU in ``bench/eviction_bench.py``.
* ``lru`` -- least recently used, the baseline.

Pinned entries are invisible to :meth:`PolicyStore.head`, so no policy can evict them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import ClassVar, NamedTuple, Protocol

from edgecache.errors import ConfigError
from edgecache.metrics import CACHE_EVICTION_POLICY

__all__ = [
    "MAIN",
    "SMALL",
    "EvictionPolicy",
    "LRUPolicy",
    "MemoryPolicyStore",
    "PolicyEntry",
    "PolicyStore",
    "S3FIFOPolicy",
    "policy_by_name",
    "show_policy",
]

SMALL = 0
"""Queue id of S3-FIFO's small (probationary) FIFO; LRU uses it as its only queue."""
MAIN = 1
"""Queue id of S3-FIFO's main FIFO."""


class PolicyEntry(NamedTuple):
    """What a policy sees of one cached block."""

    key: str
    size: int
    queue: int
    freq: int


class PolicyStore(Protocol):
    """The state a policy reads and changes; tiers implement it over their own bookkeeping."""

    def head(self, queue: int) -> PolicyEntry | None:
        """Oldest unpinned entry of ``queue``, or None."""

    def requeue(self, key: str, queue: int, freq: int) -> None:
        """Move ``key`` to the tail (newest end) of ``queue`` with frequency ``freq``."""

    def remove(self, key: str) -> None:
        """Drop ``key`` (the caller deletes the block's data)."""

    def queue_bytes(self, queue: int) -> int:
        """Bytes held by ``queue``."""

    def total_bytes(self) -> int:
        """Bytes held by all queues."""

    def ghost_add(self, key: str) -> None:
        """Remember that ``key`` was evicted."""

    def ghost_contains(self, key: str) -> bool:
        """Whether ``key`` was evicted recently."""


class EvictionPolicy(ABC):
    """Decides where new blocks enter, what a hit does, and which blocks leave."""

    name: ClassVar[str]

    @abstractmethod
    def admit(self, store: PolicyStore, key: str) -> tuple[int, int]:
        """Queue and initial frequency of a block being inserted."""

    @abstractmethod
    def on_hit(self, queue: int, freq: int, hits: int) -> tuple[bool, int]:
        """After ``hits`` reads of an entry: (move it to its queue's tail?, new frequency)."""

    def hit_is_noop(self, queue: int, freq: int) -> bool:
        """Whether one more read of an entry in this state would change nothing (S3-FIFO at
        its saturated frequency; never under LRU, where every hit moves the entry)."""
        move, new_freq = self.on_hit(queue, freq, 1)
        return not move and new_freq == freq

    @abstractmethod
    def evict(self, store: PolicyStore, bytes_to_free: int) -> list[PolicyEntry]:
        """Remove entries until ``bytes_to_free`` are freed or nothing evictable is left."""


class LRUPolicy(EvictionPolicy):
    """Least recently used: one queue, hits move to the tail, the head leaves."""

    name = "lru"

    def admit(self, store: PolicyStore, key: str) -> tuple[int, int]:
        return SMALL, 0

    def on_hit(self, queue: int, freq: int, hits: int) -> tuple[bool, int]:
        return True, 0

    def evict(self, store: PolicyStore, bytes_to_free: int) -> list[PolicyEntry]:
        removed: list[PolicyEntry] = []
        freed = 0
        while freed < bytes_to_free:
            # MAIN is empty under LRU, unless the SSD index was filled under S3-FIFO before the
            # policy setting changed: those blocks are older than any of ours, and must not
            # become unevictable.
            entry = store.head(MAIN) or store.head(SMALL)
            if entry is None:
                break
            store.remove(entry.key)
            removed.append(entry)
            freed += entry.size
        return removed


class S3FIFOPolicy(EvictionPolicy):
    """S3-FIFO: a small probationary FIFO, a main FIFO with re-insertion, and a ghost list."""

    name = "s3fifo"
    small_fraction = 0.10
    """Share of the tier's bytes the small FIFO may hold before it is evicted from first."""
    max_freq = 3
    """Frequency saturates here (2 bits in the paper): a block survives at most 3 main passes."""

    def admit(self, store: PolicyStore, key: str) -> tuple[int, int]:
        return (MAIN if store.ghost_contains(key) else SMALL), 0

    def on_hit(self, queue: int, freq: int, hits: int) -> tuple[bool, int]:
        return False, min(freq + hits, self.max_freq)

    def evict(self, store: PolicyStore, bytes_to_free: int) -> list[PolicyEntry]:
        removed: list[PolicyEntry] = []
        freed = 0
        while freed < bytes_to_free:
            small_head = store.head(SMALL)
            main_head = store.head(MAIN)
            if small_head is None and main_head is None:
                break
            use_small = small_head is not None and (
                main_head is None
                or store.queue_bytes(SMALL) > self.small_fraction * store.total_bytes()
            )
            if use_small:
                assert small_head is not None
                if small_head.freq > 0:
                    store.requeue(small_head.key, MAIN, 0)
                    continue
                store.remove(small_head.key)
                store.ghost_add(small_head.key)
                removed.append(small_head)
                freed += small_head.size
            else:
                assert main_head is not None
                if main_head.freq > 0:
                    store.requeue(main_head.key, MAIN, main_head.freq - 1)
                    continue
                store.remove(main_head.key)
                removed.append(main_head)
                freed += main_head.size
        return removed


_POLICIES: dict[str, type[EvictionPolicy]] = {p.name: p for p in (S3FIFOPolicy, LRUPolicy)}


def show_policy(tier: str, policy: EvictionPolicy) -> None:
    """Say which policy ``tier`` uses now (``edgecache_cache_eviction_policy``)."""
    for name in _POLICIES:
        CACHE_EVICTION_POLICY.labels(tier, name).set(1 if name == policy.name else 0)


def policy_by_name(name: str) -> EvictionPolicy:
    """A fresh policy object by its settings name; ConfigError listing the known names."""
    try:
        return _POLICIES[name]()
    except KeyError:
        raise ConfigError(
            f"eviction_policy: unknown policy {name!r}; known: {', '.join(sorted(_POLICIES))}"
        ) from None


class MemoryPolicyStore:
    """:class:`PolicyStore` in process memory (the MEM tier, benchmarks, property tests)."""

    def __init__(self, *, ghost_capacity: int = 4096) -> None:
        self._queues: dict[int, OrderedDict[str, list[int]]] = {
            SMALL: OrderedDict(),
            MAIN: OrderedDict(),
        }
        self._queue_bytes = {SMALL: 0, MAIN: 0}
        self._where: dict[str, int] = {}
        self._pinned: set[str] = set()
        self._ghost: OrderedDict[str, None] = OrderedDict()
        self._ghost_capacity = ghost_capacity

    # --- what tiers call ---------------------------------------------------------------------
    def insert(self, key: str, size: int, queue: int, freq: int) -> None:
        """Add a new entry at the tail of ``queue``."""
        if key in self._where:
            self.remove(key)
        self._queues[queue][key] = [size, freq]
        self._queue_bytes[queue] += size
        self._where[key] = queue
        self._ghost.pop(key, None)

    def touch(self, policy: EvictionPolicy, key: str, hits: int = 1) -> None:
        """Record ``hits`` reads of ``key`` as ``policy`` wants them recorded."""
        queue = self._where.get(key)
        if queue is None:
            return
        slot = self._queues[queue][key]
        move, slot[1] = policy.on_hit(queue, slot[1], hits)
        if move:
            self._queues[queue].move_to_end(key)

    def pin(self, key: str, pinned: bool = True) -> None:
        """Exclude ``key`` from eviction (or include it again)."""
        if pinned:
            self._pinned.add(key)
        else:
            self._pinned.discard(key)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    # --- PolicyStore -------------------------------------------------------------------------
    def head(self, queue: int) -> PolicyEntry | None:
        for key, (size, freq) in self._queues[queue].items():
            if key not in self._pinned:
                return PolicyEntry(key, size, queue, freq)
        return None

    def requeue(self, key: str, queue: int, freq: int) -> None:
        old = self._where[key]
        size, _ = self._queues[old].pop(key)
        self._queue_bytes[old] -= size
        self._queues[queue][key] = [size, freq]
        self._queue_bytes[queue] += size
        self._where[key] = queue

    def remove(self, key: str) -> None:
        queue = self._where.pop(key, None)
        if queue is None:
            return
        size, _ = self._queues[queue].pop(key)
        self._queue_bytes[queue] -= size
        self._pinned.discard(key)

    def queue_bytes(self, queue: int) -> int:
        return self._queue_bytes[queue]

    def total_bytes(self) -> int:
        return self._queue_bytes[SMALL] + self._queue_bytes[MAIN]

    def ghost_add(self, key: str) -> None:
        self._ghost[key] = None
        self._ghost.move_to_end(key)
        while len(self._ghost) > max(self._ghost_capacity, len(self._where)):
            self._ghost.popitem(last=False)

    def ghost_contains(self, key: str) -> bool:
        return key in self._ghost
