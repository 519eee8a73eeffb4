"""EdgeCacheFile: the file object ``open(..., "rb")`` returns.

It reads through :class:`~edgecache.fs.EdgeCacheFileSystem` block by block at the object version
seen when it was opened (a file handle never mixes two versions). A handle opened on cached
metadata of a version that is already gone switches to the current version on its first read,
as long as it has returned no byte yet; after that, a change is an error. Reads whose blocks are all
cached are served in the calling thread without touching the event loop. Sequential reads widen
a read-ahead window (1, 2, 4... up to ``readahead_blocks``) that fetches the next blocks in
parallel in the background, so a stream keeps the link busy instead of waiting a round trip per
block.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from edgecache.backends import ObjectChangedError

if TYPE_CHECKING:
    from edgecache.fs._filesystem import EdgeCacheFileSystem

__all__ = ["EdgeCacheFile"]

log = logging.getLogger(__name__)


class EdgeCacheFile(AbstractBufferedFile):  # type: ignore[misc]
    """Read-only, seekable, block-cached view of one object version."""

    def __init__(
        self, fs: EdgeCacheFileSystem, path: str, *, size: int, version: str, **kwargs: Any
    ) -> None:
        self.version = version
        self._ec_fs = fs
        self._next_sequential = 0
        self._window = 0
        self._ahead_until = 0
        self._served = False
        self._held: tuple[int, bytes] | None = None
        """The last whole block a read inside one block fetched: (index, bytes)."""
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=fs.settings.block_size,
            cache_type="none",
            size=size,
            **kwargs,
        )

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
        fs = self._ec_fs
        end = min(end, self.size)
        if start >= end:
            return b""
        self._plan_readahead(start, end)
        bs = fs.settings.block_size
        index = start // bs
        if (end - 1) // bs == index:
            # A read inside one block (e.g. 1 MiB reads of 4 MiB blocks) keeps the whole block,
            # so the next reads of it do not read and verify it again from the SSD tier when
            # the MEM tier does not hold it.
            held = self._held
            if held is None or held[0] != index:
                held = self._held = (index, self._read_range(index * bs, (index + 1) * bs))
            offset = start - index * bs
            return held[1][offset : offset + end - start]
        return self._read_range(start, end)

    def _read_range(self, start: int, end: int) -> bytes:
        fs = self._ec_fs
        end = min(end, self.size)
        data = fs._cat_range_cached(self.path, self.version, self.size, start, end)
        if data is None:
            data = sync(fs.loop, fs._cat_range, self.path, self.version, self.size, start, end)
        return data

    def _switch_to_current_version(self) -> None:
        fs = self._ec_fs
        fs.metadata.invalidate(fs._identity, self.path)
        cached = sync(fs.loop, fs._cached_info, self.path)
        self.version, self.size = fs._file_info(cached, self.path)
        self.cache.size = self.size
        self._held = None
        self._next_sequential = self._window = self._ahead_until = 0

    def _plan_readahead(self, start: int, end: int) -> None:
        fs = self._ec_fs
        bs = fs.settings.block_size
        limit = fs.settings.readahead_blocks
        if limit <= 0:
            return
        if start == self._next_sequential and start > 0:
            self._window = min(max(1, self._window * 2), limit)
        elif start != self._next_sequential:
            self._window = 0
        self._next_sequential = end
        if not self._window:
            return
        first = max((end + bs - 1) // bs, self._ahead_until)
        last = min((end - 1) // bs + self._window, (self.size - 1) // bs)
        if last < first:
            return
        self._ahead_until = last + 1
        # Blocks a tier holds are a local read away: reading them ahead only competes with the
        # reader for the GIL (and is thrown away when MEM cannot keep them).
        while first <= last and fs.cache.holds(fs._key(self.path, self.version, first)):
            first += 1
        if first > last:
            return
        future = asyncio.run_coroutine_threadsafe(
            fs._prefetch_blocks(self.path, self.version, self.size, first, last), fs.loop
        )
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("read-ahead failed: %s", future.exception())
