"""Room in the node's cache for a view file the cache refused, taken from other Datasets' views.

Place in the flow::

    DatasetView.materialise: the file staged and verified, its charge refused (no room)
      -> ViewRoom(asking view, bytes): files of other views over their own share unlinked,
         least recently read first, until that many bytes are free
      -> the charge tried once more; still no room: the file is not renamed in (reported as
         larger than the quota)

Each placed Dataset's share is the capacity its runtime gives it on the node
(:func:`~edgecache.agent._agent.quota_of`); the node's cache quota is the sum of the shares. A
view holds more than its share only until its own next pass evicts it (its runtime's quota was
lowered, its mount cannot be listed): meanwhile another view that needs the room it was
promised takes it from there. Unpinned blocks are evicted by the cache itself for a charge
(:meth:`~edgecache.cache.TieredCache.charge`); never evicted: a pinned view's files, pinned
blocks, a view within its share, a file a view is writing or replacing (its charge is settled
only once it is in: :meth:`~edgecache.agent._view.DatasetView.eviction_order` leaves it out),
and any file a view does not list in its manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from edgecache.agent._view import DatasetView, Quota

__all__ = ["ViewRoom"]


class ViewRoom:
    """What a view calls (``view.room``) when the node's cache refuses one of its files."""

    def __init__(self, shares: Callable[[], Iterable[tuple[DatasetView, Quota]]]) -> None:
        """``shares()``: every placed view with the quota its runtime gives it now."""
        self._shares = shares
        self._lock = asyncio.Lock()

    async def __call__(self, asking: DatasetView, need: int) -> int:
        """Unlink least recently read files of other views over their share until ``need``
        bytes are freed (or none is left over its share); returns the bytes freed."""
        async with self._lock:
            over: dict[DatasetView, int] = {}
            candidates: list[tuple[float, DatasetView, str]] = []
            for view, quota in self._shares():
                excess = view.cached_bytes - quota.capacity_bytes
                if view is asking or quota.pinned or excess <= 0:
                    continue
                over[view] = excess
                candidates.extend((atime, view, rel) for atime, rel in view.eviction_order())
            freed = 0
            chosen: dict[DatasetView, list[str]] = {}
            for _atime, view, rel in sorted(candidates, key=lambda c: c[0]):
                if freed >= need:
                    break
                size = view.files[rel].size
                if over[view] <= 0:
                    continue  # down to its share: the rest of it is promised to it
                over[view] -= size
                freed += size
                chosen.setdefault(view, []).append(rel)
            for view, rels in chosen.items():
                view.evict_files(rels)
                await view.settle_charge()
                view.save()
            return freed
