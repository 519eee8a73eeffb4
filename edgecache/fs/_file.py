"""EdgeCacheFile: the file object ``open(..., "rb")`` returns.

It reads one planned object version (:class:`~edgecache.engine.ReadPlan`) through the read
engine block by block (a file handle never mixes two versions). A handle opened on cached
metadata of a version that is already gone switches to the current version on its first read,
as long as it has returned no byte yet; after that, a change is an error. Reads whose blocks are
all cached are served in the calling thread without touching the event loop
(:meth:`~edgecache.engine.ReadEngine.read_cached`). Sequential reads widen a read-ahead window
(1, 2, 4... up to ``readahead_blocks``) that fetches the next blocks in parallel in the
background, so a stream keeps the link busy instead of waiting a round trip per block.
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


class EdgeCacheFile(AbstractBufferedFile):  # type: ignore[misc]
    """Read-only, seekable, block-cached view of one object version."""

    def __init__(self, fs: EdgeCacheFileSystem, plan: ReadPlan, **kwargs: Any) -> None:
        self.plan = plan
        self._ec_fs = fs
        self._next_sequential = 0
        self._window = 0
        self._ahead_until = 0
        self._served = False
        self._held: tuple[int, bytes] | None = None
        """The last whole block a read inside one block fetched: (index, bytes)."""
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
        out: bytes = super().read(length)
        if (length is None or length < 0) and self.loc < self.size:
            # The first read switched to a longer current version: "all" means all of it.
            out += super().read(-1)
        return out

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
            # A read inside one block (e.g. 1 MiB reads of 4 MiB blocks) keeps the whole block,
            # so the next reads of it do not read and verify it again from the SSD tier when
            # the MEM tier does not hold it.
            index = blocks[0]
            held = self._held
            if held is None or held[0] != index:
                first = plan.block_start(index)
                held = self._held = (index, self._read(first, first + plan.block_length(index)))
            offset = start - plan.block_start(index)
            return held[1][offset : offset + end - start]
        return self._read(start, end)

    def _read(self, start: int, end: int) -> bytes:
        engine = self._engine
        data = engine.read_cached(self.plan, start, end)
        if data is None:
            data = sync(self._ec_fs.loop, engine.read, self.plan, start, end)
        return data

    def _switch_to_current_version(self) -> None:
        fs = self._ec_fs
        ttl = fs.settings.metadata.ttl_seconds
        self.plan = sync(fs.loop, self._engine.replan, self.plan, ttl=ttl)
        self.size = self.cache.size = self.plan.size
        self._held = None
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
