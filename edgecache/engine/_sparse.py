"""Sparse reads: which small reads fetch pages instead of whole blocks.

A read far smaller than a block (a Parquet footer, a zarr or HDF5 index, one sampled record)
that misses the cache would fetch a whole 4 MiB block over the WAN for a few KiB. The read
engine asks :class:`SparsePlanner` first: for such a read it names the *pages* to fetch, small
blocks of ``page_size`` bytes (cache keys with the page size as block size, kept in the same
MEM and SSD tiers and looked up after the whole block). Reads that show sequential or dense use
of a block are widened to the whole block, so a stream keeps whole-block efficiency:

- the part of the block asked for is larger than 1/16 of the block;
- the read starts where the previous read of the same object version ended (a sequential reader);
- ``dense_reads`` partial reads of one block were already served by pages (a dense pattern: the
  block will be read anyway, one request is cheaper than many).

Pure bookkeeping (no I/O), safe from several threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PAGE_BYTES", "SparsePlanner"]

PAGE_BYTES = 16 * 1024
"""Page size: a 4 KiB read costs one request and 16 KiB, where a block costs 4 MiB (335 ms at
100 Mbit/s); small enough that a page's transfer is a few percent of a round trip."""


@dataclass
class _ObjectUse:
    last_end: int = -1
    partial_reads: dict[int, int] = field(default_factory=dict)


class SparsePlanner:
    """Remembers how the recently read objects were read, and plans partial-block misses."""

    def __init__(
        self, *, page_size: int = PAGE_BYTES, dense_reads: int = 4, objects: int = 4096
    ) -> None:
        self.page_size = page_size
        self.dense_reads = dense_reads
        self._objects = objects
        self._uses: OrderedDict[tuple[str, str], _ObjectUse] = OrderedDict()
        self._lock = threading.Lock()

    def _use(self, path: str, version: str) -> _ObjectUse:
        key = (path, version)
        use = self._uses.get(key)
        if use is None:
            use = self._uses[key] = _ObjectUse()
            if len(self._uses) > self._objects:
                self._uses.popitem(last=False)
        else:
            self._uses.move_to_end(key)
        return use

    def read(self, path: str, version: str, start: int, end: int) -> bool:
        """Note a read of ``[start, end)``; True when it continues the previous read of this
        object version (a sequential reader: fetch whole blocks)."""
        with self._lock:
            use = self._use(path, version)
            sequential = start == use.last_end and start > 0
            use.last_end = end
            return sequential

    def paged(self, block_size: int) -> bool:
        """Whether blocks of ``block_size`` have pages: only where pages divide a block into at
        least 8 (smaller blocks cost little more than a page)."""
        page = self.page_size
        return page > 0 and block_size % page == 0 and block_size >= 8 * page

    def pages(
        self,
        path: str,
        version: str,
        block: int,
        lo: int,
        hi: int,
        *,
        block_size: int,
        sequential: bool,
    ) -> range | None:
        """Pages (indices in units of ``page_size`` from the object's start) to fetch for the
        part ``[lo, hi)`` of block ``block`` that no tier holds, or None: fetch the whole block.
        """
        if sequential or hi - lo > block_size // 16 or not self.paged(block_size):
            return None
        with self._lock:
            use = self._use(path, version)
            count = use.partial_reads.get(block, 0)
            if count >= self.dense_reads:
                return None
            use.partial_reads[block] = count + 1
        return range(lo // self.page_size, (hi - 1) // self.page_size + 1)

    def first_reads(
        self, ranges: Sequence[tuple[int | None, int | None]], *, block_size: int
    ) -> list[tuple[int, int]]:
        """What to fetch for ``ranges`` (fsspec's convention) of an object whose size is not
        known yet: per range, the pages it covers when it is small (as :meth:`pages` decides
        for a first read), else the whole block it starts in; ranges counted from the end
        need the size and get nothing. Sorted spans ``[start, end)``, each once; a span may
        reach past the object's end (the backend sends what there is)."""
        page = self.page_size
        spans: set[tuple[int, int]] = set()
        for start, end in ranges:
            lo = start or 0
            if lo < 0 or (end is not None and end <= max(lo, 0)):
                continue
            if end is not None and end - lo <= block_size // 16 and self.paged(block_size):
                spans.add((lo // page * page, -(-end // page) * page))
            else:
                first = lo // block_size * block_size
                spans.add((first, first + block_size))
        return sorted(spans)

    def forget(self, path: str) -> list[tuple[str, int]]:
        """Drop what is known of ``path`` (it was replaced); returns (version, block) pairs
        whose pages were fetched, for the caller to discard."""
        with self._lock:
            dropped = [k for k in self._uses if k[0] == path]
            out = [(k[1], b) for k in dropped for b in self._uses.pop(k).partial_reads]
        return out
