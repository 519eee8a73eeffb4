"""Sparse reads: which small reads fetch pages instead of whole blocks.

A read far smaller than a block (a Parquet footer, a zarr or HDF5 index, one sampled record)
that misses the cache would fetch a whole 4 MiB block over the WAN for a few KiB. The read
engine asks :class:`SparsePlanner` first: for such a read it names the *pages* to fetch, small
blocks of ``page_size`` bytes (cache keys with the page size as block size, kept in the same
MEM and SSD tiers and looked up after the whole block). A read of a few KiB (at most half a
page) uses the finer grid of ``fine_page_size`` instead, so that it fetches about what it asks
(an unaligned 4 KiB read: 8 KiB, where 16 KiB pages cost 16-32 KiB) while larger sparse reads
keep few pages (index rows) each. Reads that show sequential or dense use of a block are
widened to the whole block, so a stream keeps whole-block efficiency:

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
from typing import NamedTuple

__all__ = ["FINE_PAGE_BYTES", "PAGE_BYTES", "Pages", "SparsePlanner"]

PAGE_BYTES = 16 * 1024
"""Page size: a 16 KiB read costs one request and 16-32 KiB, where a block costs 4 MiB (335 ms
at 100 Mbit/s); small enough that a page's transfer is a few percent of a round trip."""
FINE_PAGE_BYTES = 4 * 1024
"""Page size for reads of at most half a page: the store's own client fetches exactly the
4 KiB asked; 4 KiB pages fetch 4-8 KiB for it (1-2 index rows), 16 KiB pages 16-32 KiB."""


class Pages(NamedTuple):
    """Pages to fetch for one read: their size, and their indices in units of that size from
    the object's start."""

    size: int
    indices: range


@dataclass
class _ObjectUse:
    last_end: int = -1
    partial_reads: dict[int, int] = field(default_factory=dict)


class SparsePlanner:
    """Remembers how the recently read objects were read, and plans partial-block misses."""

    def __init__(
        self,
        *,
        page_size: int = PAGE_BYTES,
        fine_page_size: int = FINE_PAGE_BYTES,
        dense_reads: int = 4,
        objects: int = 4096,
    ) -> None:
        self.page_size = page_size
        self.fine_page_size = fine_page_size if 0 < fine_page_size < page_size else page_size
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

    def page_size_for(self, length: int) -> int:
        """The page grid a read of ``length`` bytes is fetched on (see the module doc)."""
        return self.fine_page_size if length <= self.page_size // 2 else self.page_size

    def page_sizes(self, length: int) -> tuple[int, ...]:
        """The page grids that may hold a read of ``length`` bytes, the likelier first."""
        if length <= self.page_size // 2 and self.fine_page_size != self.page_size:
            return (self.fine_page_size, self.page_size)
        return (self.page_size,)

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
    ) -> Pages | None:
        """Pages to fetch for the part ``[lo, hi)`` of block ``block`` that no tier holds, or
        None: fetch the whole block."""
        if sequential or hi - lo > block_size // 16 or not self.paged(block_size):
            return None
        with self._lock:
            use = self._use(path, version)
            count = use.partial_reads.get(block, 0)
            if count >= self.dense_reads:
                return None
            use.partial_reads[block] = count + 1
        page = self.page_size_for(hi - lo)
        return Pages(page, range(lo // page, (hi - 1) // page + 1))

    def first_reads(
        self, ranges: Sequence[tuple[int | None, int | None]], *, block_size: int
    ) -> list[tuple[int, int, int]]:
        """What to fetch for ``ranges`` (fsspec's convention) of an object whose size is not
        known yet: per range, the pages it covers when it is small (as :meth:`pages` decides
        for a first read), else the whole block it starts in; ranges counted from the end
        need the size and get nothing. Sorted spans ``(start, end, page size)``, each once,
        the page size 0 for a block; a span may reach past the object's end (the backend
        sends what there is)."""
        spans: set[tuple[int, int, int]] = set()
        for start, end in ranges:
            lo = start or 0
            if lo < 0 or (end is not None and end <= max(lo, 0)):
                continue
            if end is not None and end - lo <= block_size // 16 and self.paged(block_size):
                page = self.page_size_for(end - lo)
                spans.add((lo // page * page, -(-end // page) * page, page))
            else:
                first = lo // block_size * block_size
                spans.add((first, first + block_size, 0))
        return sorted(spans)

    def forget(self, path: str) -> list[tuple[str, int]]:
        """Drop what is known of ``path`` (it was replaced); returns (version, block) pairs
        whose pages were fetched, for the caller to discard."""
        with self._lock:
            dropped = [k for k in self._uses if k[0] == path]
            out = [(k[1], b) for k in dropped for b in self._uses.pop(k).partial_reads]
        return out
