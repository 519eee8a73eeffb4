"""ReadPlan: one version of one object cut into blocks, the unit every read is planned on.

The read engine (:mod:`edgecache.engine._engine`) plans a read once (path, version, size, block
size) and then asks the plan which blocks a byte range covers, how long each is, where a range
starts inside its first block, and what each block's cache key is. This is the only place that
does block arithmetic: the filesystem, the file object, read-ahead, prefetch and the pool all
ask a plan instead of dividing by the block size themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from edgecache.cache import BlockKey

__all__ = ["ReadPlan"]

_KEYS_KEPT = 1 << 14
"""Block keys remembered (about 350 bytes each with the cache's own bookkeeping: ~6 MB at
most): more than the blocks a warm loop over 10,000 small files names, so each open of one
finds its key instead of hashing it again."""


@lru_cache(maxsize=_KEYS_KEPT)
def _block_key(backend: str, path: str, version: str, index: int, block_size: int) -> BlockKey:
    # A key is a pure function of its fields; building one (an xxh3-128 of them and a frozen
    # dataclass) cost a warm small-file open a few microseconds, a lookup here a fraction.
    return BlockKey(backend, path, version, index, block_size)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Object ``path`` of backend ``backend`` at ``version``: ``size`` bytes in blocks of
    ``block_size`` bytes."""

    backend: str
    """Backend identity (part of every block key)."""
    path: str
    """Object path as the backend names it."""
    version: str
    """Version token the backend gave for this object (ETag, mtime...)."""
    size: int
    """Object size in bytes."""
    block_size: int
    """Bytes per block (the last block may be shorter)."""

    @property
    def block_count(self) -> int:
        """Number of blocks (0 for an empty object)."""
        return (self.size + self.block_size - 1) // self.block_size

    def block_of(self, offset: int) -> int:
        """Index of the block holding byte ``offset``."""
        return offset // self.block_size

    def block_start(self, index: int) -> int:
        """Offset of block ``index``'s first byte."""
        return index * self.block_size

    def block_length(self, index: int) -> int:
        """Bytes in block ``index`` (shorter for the last one, 0 past the end)."""
        return max(0, min(self.block_size, self.size - index * self.block_size))

    def blocks(self, start: int = 0, end: int | None = None) -> range:
        """Indices of the blocks covering bytes ``[start, end)`` (clipped to the object)."""
        start, end = max(0, start), self.size if end is None else min(end, self.size)
        if start >= end:
            return range(0)
        return range(start // self.block_size, (end - 1) // self.block_size + 1)

    def span(self, start: int | None, end: int | None) -> tuple[int, int]:
        """``[start, end)`` in fsspec's convention (None: the object's bounds; negative: from
        the end) as offsets inside the object."""
        size = self.size
        lo = 0 if start is None else (max(size + start, 0) if start < 0 else start)
        hi = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
        return lo, hi

    def key(self, index: int) -> BlockKey:
        """The cache key of block ``index``."""
        return _block_key(self.backend, self.path, self.version, index, self.block_size)

    def bytes_in(self, indices: list[int] | range) -> int:
        """Total bytes of the blocks ``indices``."""
        return sum(self.block_length(i) for i in indices)

    def cut(self, blocks: list[bytes], start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` out of the whole blocks :meth:`blocks` named for that range."""
        offset = start - self.block_start(start // self.block_size)
        if len(blocks) == 1:
            return blocks[0][offset : offset + end - start]
        return b"".join(blocks)[offset : offset + end - start]
