"""EdgeCacheFile: the file object ``open(..., "rb")`` returns.

It reads one planned object version (:class:`~edgecache.engine.ReadPlan`) through the read
engine block by block (a file handle never mixes two versions). A handle opened on cached
metadata of a version that is already gone switches to the current version on its first read,
as long as it has returned no byte yet; after that, a change is an error. Reads whose blocks are
all cached are served in the calling thread without touching the event loop
(:meth:`~edgecache.engine.ReadEngine.read_cached`). Sequential reads widen a read-ahead window
(1, 2, 4... up to ``readahead_blocks``) that fetches the next blocks in parallel in the
background, so a stream keeps the link busy instead of waiting a round trip per block.

Reads inside one block are the common case (``f.read(n)`` for n from 64 KiB to 4 MiB: pyarrow,
h5py, shard readers) and have their own short path: the handle holds the block it last read
(verified once when it was read from disk) and serves the following reads of it from memory
without going through fsspec's buffered-file machinery. A block read from the SSD tier for
reads of one size that divides it is held as pieces of that size, each read from disk into its
own ``bytes`` (:meth:`~edgecache.cache.TieredCache.get_cached_pieces`): those reads then cost
no copy after the read from disk; other reads cut their bytes out of the held block. ``readinto``
copies into the caller's buffer once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from edgecache.engine import ReadEngine, ReadPlan
from edgecache.errors import ObjectChangedError

if TYPE_CHECKING:
    from edgecache.fs._filesystem import EdgeCacheFileSystem

__all__ = ["EdgeCacheFile"]

_PIECES_FROM_BYTES = 256 * 1024
"""Reads of at least this size get a held block in pieces of their size (no copy after the read
from disk); smaller ones cut their bytes out of the whole block (a copy from the CPU cache,
cheaper than a system call per piece)."""


class EdgeCacheFile(AbstractBufferedFile):  # type: ignore[misc]
    """Read-only, seekable, block-cached view of one object version."""

    loc: int
    """Current position (fsspec's name for it)."""

    def __init__(self, fs: EdgeCacheFileSystem, plan: ReadPlan, **kwargs: Any) -> None:
        self.plan = plan
        self._ec_fs = fs
        self._next_sequential = 0
        self._window = 0
        self._ahead_until = 0
        self._served = False
        self._held_start = self._held_end = 0
        """Object offsets ``[start, end)`` of the held block (empty: none held)."""
        self._held: list[bytes] = []
        """The held block, as pieces of ``_piece`` bytes (one piece: the whole block)."""
        self._piece = 0
        super().__init__(
            fs,
            plan.path,
            mode="rb",
            block_size=plan.block_size,
            cache_type="none",
            size=plan.size,
            **kwargs,
        )

    @property
    def version(self) -> str:
        """The object version this handle reads."""
        return self.plan.version

    @property
    def _engine(self) -> ReadEngine:
        return self._ec_fs.engine

    def read(self, length: int = -1) -> bytes:
        """Up to ``length`` bytes (all the rest if negative) from the current position."""
        loc: int = self.loc
        end = self.size if length is None or length < 0 else min(loc + length, self.size)
        if self._held_start <= loc < end <= self._held_end and not self._closed:
            self.loc = end
            self._next_sequential = end
            return self._cut(loc, end)
        out: bytes = super().read(length)
        if (length is None or length < 0) and self.loc < self.size:
            # The first read switched to a longer current version: "all" means all of it.
            out += super().read(-1)
        return out

    def readinto(self, b: Any) -> int:
        """Read into ``b`` (up to its length); returns the number of bytes put there."""
        out = memoryview(b).cast("B")
        loc: int = self.loc
        end = min(loc + out.nbytes, self.size)
        if self._held_start <= loc < end <= self._held_end and not self._closed:
            self._cut_into(loc, end, out)
            self.loc = self._next_sequential = end
            return end - loc
        data = self.read(out.nbytes)
        out[: len(data)] = data
        return len(data)

    def _cut(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the held block."""
        offset = start - self._held_start
        piece = self._piece
        index, inside = divmod(offset, piece)
        held = self._held[index]
        if inside == 0 and end - start == len(held):
            return held  # a whole piece: no copy
        if inside + end - start <= len(held):
            return held[inside : inside + end - start]
        out = bytearray(end - start)
        self._cut_into(start, end, memoryview(out))
        return bytes(out)

    def _cut_into(self, start: int, end: int, out: memoryview) -> None:
        offset = start - self._held_start
        piece, done, want = self._piece, 0, end - start
        while done < want:
            index, inside = divmod(offset + done, piece)
            held = self._held[index]
            n = min(len(held) - inside, want - done)
            out[done : done + n] = memoryview(held)[inside : inside + n]
            done += n

    def _fetch_range(self, start: int, end: int) -> bytes:
        try:
            data = self._fetch_version(start, end)
        except ObjectChangedError:
            if self._served:
                raise
            self._switch_to_current_version()
            data = self._fetch_version(start, end)
        self._served = self._served or bool(data)
        return data

    def _fetch_version(self, start: int, end: int) -> bytes:
        plan = self.plan
        end = min(end, plan.size)
        if start >= end:
            return b""
        self._plan_readahead(start, end)
        blocks = plan.blocks(start, end)
        if len(blocks) == 1:
            index = blocks[0]
            offset = start - plan.block_start(index)
            if self._hold(index, end - start, offset=offset, sequential=self._window > 0):
                return self._cut(start, end)
        return self._read(start, end)

    def _hold(self, index: int, length: int, *, offset: int, sequential: bool) -> bool:
        """Hold block ``index`` for reads of ``length`` bytes, the first ``offset`` bytes into
        it (as pieces of that size when it divides the offset). A small read of a block no
        tier holds, when reads are not sequential, holds nothing (False): the engine fetches
        only what it covers."""
        plan = self.plan
        first = plan.block_start(index)
        size = plan.block_length(index)
        piece = size
        if _PIECES_FROM_BYTES <= length < size and offset % length == 0:
            piece = length
        pieces = self._engine.blocks.get_cached_pieces(plan.key(index), piece)
        if pieces is None:
            if not sequential and length <= plan.block_size // 16:
                return False
            piece = size
            pieces = [self._read(first, first + size)]
        self._held, self._piece = pieces, piece
        self._held_start, self._held_end = first, first + size
        return True

    def _drop_held(self) -> None:
        self._held, self._piece = [], 0
        self._held_start = self._held_end = 0

    def _read(self, start: int, end: int) -> bytes:
        engine = self._engine
        data = engine.read_cached(self.plan, start, end)
        if data is None:
            data = sync(engine.loop, engine.read, self.plan, start, end)
        return data

    def _switch_to_current_version(self) -> None:
        fs = self._ec_fs
        ttl = fs.settings.metadata.ttl_seconds
        self.plan = sync(self._engine.loop, self._engine.replan, self.plan, ttl=ttl)
        self.size = self.cache.size = self.plan.size
        self._drop_held()
        self._next_sequential = self._window = self._ahead_until = 0

    def _plan_readahead(self, start: int, end: int) -> None:
        plan = self.plan
        limit = self._ec_fs.settings.read.readahead_blocks
        if limit <= 0:
            return
        if start == self._next_sequential and start > 0:
            self._window = min(max(1, self._window * 2), limit)
        elif start != self._next_sequential:
            self._window = 0
        self._next_sequential = end
        if not self._window:
            return
        first = max(plan.block_of(end - 1) + 1, self._ahead_until)
        last = min(plan.block_of(end - 1) + self._window, plan.block_count - 1)
        if last < first:
            return
        self._ahead_until = last + 1
        # Blocks a tier holds are a local read away: reading them ahead only competes with the
        # reader for the GIL (and is thrown away when MEM cannot keep them).
        self._engine.fetch_ahead(plan, self._engine.missing_blocks(plan, range(first, last + 1)))

    def close(self) -> None:
        """Close the handle and let go of the held block."""
        self._drop_held()
        super().close()
