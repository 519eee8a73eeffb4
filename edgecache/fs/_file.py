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
(:meth:`~edgecache.cache.TieredCache.open_block`) and serves the following reads of it from
there. From the SSD tier every read is read from the block file and verified there, segment by
segment, so a sequential reader reads and hashes each byte once and gets the bytes the read
from disk made, without another copy; from MEM (or a block just fetched) the bytes are cut out
of the block in memory. ``readinto`` reads into the caller's buffer directly.

The class is an :class:`io.IOBase` with fsspec's file attributes (``fs``, ``path``, ``mode``,
``size``, ``loc``, ``blocksize``, ``details``, ``info()``, ``readuntil``), not fsspec's
``AbstractBufferedFile``: a read-only handle needs none of its write buffering or read caches,
and building, reading and closing one costs a warm small-file read a few microseconds less.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync

from edgecache.cache import OpenBlock
from edgecache.cache.memory import HeldBlock
from edgecache.engine import ReadEngine, ReadPlan
from edgecache.errors import ObjectChangedError

if TYPE_CHECKING:
    from edgecache.fs._filesystem import EdgeCacheFileSystem

__all__ = ["EdgeCacheFile"]

_LINE_CHUNK_BYTES = 64 * 1024
"""``readline`` reads this much at a time (and keeps it for the next lines)."""


class EdgeCacheFile(io.IOBase):
    """Read-only, seekable, block-cached view of one object version."""

    mode = "rb"

    def __init__(self, fs: EdgeCacheFileSystem, plan: ReadPlan) -> None:
        self.fs = fs
        self.plan = plan
        self.path = plan.path
        self.size = plan.size
        self.blocksize = plan.block_size
        self.loc = 0
        """Current position (fsspec's name for it)."""
        self.kwargs: dict[str, Any] = {}
        self._details: dict[str, Any] | None = None
        self._next_sequential = 0
        self._window = 0
        self._ahead_until = 0
        self._served = False
        self._held_start = self._held_end = 0
        """Object offsets ``[start, end)`` of the open block (empty: none)."""
        self._held: OpenBlock | None = None
        """The block the last reads were in, open for reads of its parts."""
        self._line_start = 0
        self._line_chunk = b""
        """What ``readline`` read last, from ``_line_start``."""

    # --- what fsspec's files also say ----------------------------------------------------------
    @property
    def version(self) -> str:
        """The object version this handle reads."""
        return self.plan.version

    @property
    def details(self) -> dict[str, Any]:
        """The object's info (asked once)."""
        if self._details is None:
            self._details = dict(self.fs.info(self.path))
        return self._details

    def info(self) -> dict[str, Any]:
        """The object's info, as fsspec's files give it."""
        return self.details

    @property
    def full_name(self) -> str:
        """The path with the filesystem's protocol."""
        name: str = self.fs.unstrip_protocol(self.path)
        return name

    def readable(self) -> bool:
        """True while open."""
        return not self.closed

    def seekable(self) -> bool:
        """True while open."""
        return not self.closed

    def writable(self) -> bool:
        """Never: edgecache files open for reading are read-only."""
        return False

    def __reduce__(self) -> tuple[Any, ...]:
        # As fsspec's files: a pickled handle opens the path again at the same position.
        return _reopen, (self.fs, self.path, self.loc)

    def __repr__(self) -> str:
        return f"<EdgeCacheFile {self.path} {self.version}>"

    # --- position ------------------------------------------------------------------------------
    def tell(self) -> int:
        """Current position."""
        self._check_open()
        return self.loc

    def seek(self, loc: int, whence: int = 0) -> int:
        """Move to ``loc`` from the start (0), the current position (1) or the end (2)."""
        self._check_open()
        loc = int(loc)
        if whence == 0:
            target = loc
        elif whence == 1:
            target = self.loc + loc
        elif whence == 2:
            target = self.size + loc
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise ValueError("Seek before start of file")
        self.loc = target
        return target

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    # --- reading -------------------------------------------------------------------------------
    def read(self, length: int | None = -1) -> bytes:
        """Up to ``length`` bytes (all the rest if negative) from the current position."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        loc = self.loc
        end = self.size if length is None or length < 0 else min(loc + int(length), self.size)
        if end <= loc:
            return b""
        held = self._held
        look_in_cache = True
        if loc == 0 and end == self.size and held is None:
            # A small file read whole (the warm loop of a training set): one cache look-up.
            data = self._engine.read_small_cached(self.plan)
            if data is not None:
                self.loc = self._next_sequential = end
                self._served = True
                return data
            # Not cached (or larger than a block): the fetch below need not look again.
            look_in_cache = self.size > self.blocksize
        if held is not None and self._held_start <= loc and end <= self._held_end:
            data = held.read(loc - self._held_start, end - self._held_start)
            if data is not None:
                self.loc = self._next_sequential = end
                return data
            self._drop_held()  # damaged on disk: the read below fetches it again
        data = self._fetch(loc, end, look_in_cache=look_in_cache)
        self.loc = loc + len(data)
        if (length is None or length < 0) and self.loc < self.size:
            # The first read switched to a longer current version: "all" means all of it.
            data += self.read(-1)
        return data

    read1 = read

    def readinto(self, b: Any) -> int:
        """Read into ``b`` (up to its length); returns the number of bytes put there."""
        out = memoryview(b).cast("B")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        loc = self.loc
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

    readinto1 = readinto

    def readuntil(self, char: bytes = b"\n", blocks: int | None = None) -> bytes:
        """The bytes from the current position up to and including the first ``char`` (or to
        the end), read ``blocks`` bytes at a time (default 64 KiB, kept for the next call)."""
        step = blocks or _LINE_CHUNK_BYTES
        out = []
        while True:
            start = self.loc
            chunk, first = self._line_chunk, self._line_start
            if not first <= start < first + len(chunk):
                chunk, first = self.read(step), start
                self.loc = start
                self._line_chunk, self._line_start = chunk, first
                if not chunk:
                    break
            offset = start - first
            found = chunk.find(char, offset)
            if found >= 0:
                out.append(chunk[offset : found + len(char)])
                self.loc = first + found + len(char)
                break
            out.append(chunk[offset:])
            self.loc = first + len(chunk)
        return b"".join(out)

    def readline(self, size: int | None = -1) -> bytes:
        """The next line, its ``\\n`` included (at most ``size`` bytes if given)."""
        self._check_open()
        if size is not None and size >= 0:
            start = self.loc
            line = self.readuntil(b"\n", blocks=max(size, 1))[:size]
            self.loc = start + len(line)
            return line
        return self.readuntil(b"\n")

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Every line left (``hint`` is ignored: all of them)."""
        return self.read().splitlines(keepends=True)

    def _fetch(self, start: int, end: int, *, look_in_cache: bool = True) -> bytes:
        try:
            data = self._fetch_version(start, end, look_in_cache=look_in_cache)
        except ObjectChangedError:
            if self._served:
                raise
            self._switch_to_current_version()
            data = self._fetch_version(start, end)
        self._served = self._served or bool(data)
        return data

    def _fetch_version(self, start: int, end: int, *, look_in_cache: bool = True) -> bytes:
        plan = self.plan
        end = min(end, plan.size)
        if start >= end:
            return b""
        self._plan_readahead(start, end)
        blocks = plan.blocks(start, end)
        # A part of one block opens it for the reads of its other parts that follow; a whole
        # block (a small file, an f.read(4 MiB)) is one get_cached, read and verified as it
        # comes from disk: nothing follows in it to keep it open for.
        if (
            len(blocks) == 1
            and end - start < plan.block_length(index := blocks[0])
            and self._hold(index, end - start, sequential=self._window > 0)
        ):
            assert self._held is not None
            first = plan.block_start(index)
            data = self._held.read(start - first, end - first)
            if data is not None:
                return data
            self._drop_held()  # damaged on disk: the read below fetches it again
        return self._read(start, end, look_in_cache=look_in_cache)

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

    @property
    def _engine(self) -> ReadEngine:
        return self.fs.engine

    def _read(self, start: int, end: int, *, look_in_cache: bool = True) -> bytes:
        engine = self._engine
        data = engine.read_cached(self.plan, start, end) if look_in_cache else None
        if data is None:
            data = sync(engine.loop, engine.read, self.plan, start, end)
        return data

    def _switch_to_current_version(self) -> None:
        ttl = self.fs.settings.metadata.ttl_seconds
        self.plan = sync(self._engine.loop, self._engine.replan, self.plan, ttl=ttl)
        self.size = self.plan.size
        self._details = None
        self._drop_held()
        self._line_chunk = b""
        self._next_sequential = self._window = self._ahead_until = 0

    def _plan_readahead(self, start: int, end: int) -> None:
        plan = self.plan
        limit = self.fs.settings.read.readahead_blocks
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
        """Close the handle and let go of the open block."""
        if getattr(self, "_held", None) is not None:
            self._drop_held()
        self._line_chunk = b""
        super().close()


def _reopen(fs: EdgeCacheFileSystem, path: str, loc: int) -> EdgeCacheFile:
    handle: EdgeCacheFile = fs.open(path, "rb")
    handle.seek(loc)
    return handle
