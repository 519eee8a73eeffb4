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
h5py, shard readers) and have their own short path: the handle opens the block it reads once
(:meth:`~edgecache.cache.TieredCache.open_block`) and serves the following reads of it without
going through fsspec's buffered-file machinery. From the SSD tier every read is read from the
block file and verified there, segment by segment, so a sequential reader reads and hashes each
byte once and gets the bytes the read from disk made, without another copy; from MEM (or a block
just fetched) the bytes are cut out of the block in memory. ``readinto`` reads into the
caller's buffer directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from edgecache.cache import OpenBlock
from edgecache.cache.memory import HeldBlock
from edgecache.engine import ReadEngine, ReadPlan
from edgecache.errors import ObjectChangedError

if TYPE_CHECKING:
    from edgecache.fs._filesystem import EdgeCacheFileSystem

__all__ = ["EdgeCacheFile"]


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
        """Object offsets ``[start, end)`` of the open block (empty: none)."""
        self._held: OpenBlock | None = None
        """The block the last reads were in, open for reads of its parts."""
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
        held = self._held
        if held is not None and self._held_start <= loc < end <= self._held_end:
            data = held.read(loc - self._held_start, end - self._held_start)
            if data is not None:
                self.loc = self._next_sequential = end
                return data
            self._drop_held()  # damaged on disk: the read below fetches it again
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
        held = self._held
        if held is not None and self._held_start <= loc < end <= self._held_end:
            if held.read_into(loc - self._held_start, out[: end - loc]):
                self.loc = self._next_sequential = end
                return end - loc
            self._drop_held()
        data = self.read(out.nbytes)
        out[: len(data)] = data
        return len(data)

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
        if len(blocks) == 1 and end - start < plan.block_length(blocks[0]):
            # A part of a block (a whole one is read whole: a small file, a 4 MiB read).
            index = blocks[0]
            first = plan.block_start(index)
            if self._hold(index, end - start, sequential=self._window > 0):
                assert self._held is not None
                data = self._held.read(start - first, end - first)
                if data is not None:
                    return data
                self._drop_held()
        return self._read(start, end)

    def _hold(self, index: int, length: int, *, sequential: bool) -> bool:
        """Open block ``index`` for this and the following reads of ``length`` bytes. A small
        read of a block no tier holds, when reads are not sequential, opens nothing (False):
        the engine fetches only what it covers."""
        self._drop_held()
        plan = self.plan
        first = plan.block_start(index)
        size = plan.block_length(index)
        block: OpenBlock | None = self._engine.blocks.open_block(plan.key(index))
        if block is None:
            if not sequential and length <= plan.block_size // 16:
                return False
            block = HeldBlock(self._read(first, first + size))
        self._held = block
        self._held_start, self._held_end = first, first + size
        return True

    def _drop_held(self) -> None:
        held, self._held = self._held, None
        self._held_start = self._held_end = 0
        if held is not None:
            held.close()

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
