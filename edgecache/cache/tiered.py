"""TieredCache: the one object the filesystem asks for blocks.

Data path for a block read (:meth:`TieredCache.get`)::

    MEM tier --miss--> SSD tier --miss--> single-flight --> fetch() (peer or backend)
       ^  promote         |                                     |
       +------------------+<------------- store in SSD + MEM ---+

The filesystem (:mod:`edgecache.fs`) cuts objects into :class:`BlockKey`\\ s and supplies a
``fetch`` coroutine per block; the cache never knows what a backend is. Hits can be served
synchronously (:meth:`get_cached`) from any thread without touching an event loop, which is what
makes warm small-file reads cheap; misses are async. MEM evictions are demoted to the SSD tier.

A block read from the SSD tier is verified once and then held in the MEM tier's read buffer (a
few blocks, outside ``mem_quota``), so the reads of its other parts that follow are served from
memory; it is promoted into MEM proper on its second read from disk. A file handle reading a
block in parts opens it once (:meth:`open_block`): from the SSD tier each part is read and
verified on its own (only the segments it covers), so no byte is read or hashed twice for a
sequential reader and the bytes it gets need no copy after the read from disk.

A block the backend returns with the wrong length is refused (never cached,
:class:`~edgecache.errors.ObjectChangedError` raised, so the reader re-plans on the new
version): the object changed under its version, and mixing two versions would be wrong bytes.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import xxhash

from edgecache.cache._blockfile import BlockFile
from edgecache.cache._keys import BlockKey
from edgecache.cache._singleflight import FlightMap, stripe_lock
from edgecache.cache.eviction import policy_by_name
from edgecache.cache.memory import HeldBlock, MemoryTier
from edgecache.cache.ssd import SSDTier
from edgecache.config import CacheSettings, StoreSettings
from edgecache.errors import ObjectChangedError, TierUnavailableError
from edgecache.metrics import (
    BACKEND_BYTES,
    BACKEND_ERRORS,
    BACKEND_FETCH_SECONDS,
    CACHE_BYPASS,
    CACHE_MISSES,
    CACHE_READS,
)

__all__ = ["BlockFetcher", "Fetched", "OpenBlock", "TieredCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched block and the source that served it, when that is not the backend."""

    data: bytes
    source: str
    """Short source name (``peer``): bytes from it are counted as its bytes, not as backend
    (WAN) bytes."""


BlockFetcher = Callable[[], Awaitable["bytes | Fetched"]]
"""Coroutine factory that fetches one block's bytes from a peer or the backend (plain bytes:
the backend)."""
OpenBlock = HeldBlock | BlockFile
"""A block open for reads of its parts (:meth:`TieredCache.open_block`): ``length``,
``read(lo, hi)`` (None if the disk damaged it), ``read_into(lo, out)`` (False then),
``close()``."""

_SEEN_ONCE_LIMIT = 65536
"""SSD blocks remembered as read once by a multi-block read (16 bytes of key each)."""
_READ_BUFFER_BLOCKS = 4
"""Blocks the read buffer holds: the block being read and the few read ahead of it."""
_READ_BUFFER_CAP_BYTES = 32 * 1024 * 1024
"""... but no more than this unless one block is larger (then it holds one)."""
_IO_THREADS = "edgecache-io"
_CLOSE_WAIT_SECONDS = 10.0
"""Longest :meth:`TieredCache.close` waits for the block writes it handed to its I/O threads
(a few ms each on a healthy disk; the bound only keeps a hung disk from hanging the close)."""
_PAGE_WRITE_DELAY_SECONDS = 0.02
"""How long pages handed to :meth:`TieredCache.put_soon` wait before they are written: the
reader that fetched them is then sending its next request (CPU and the interpreter lock it
needs at once), and the next request's round trip is idle time for the disk work; the pages of
the reads in between are written in the same batch."""
_OPEN: weakref.WeakSet[TieredCache] = weakref.WeakSet()


class TieredCache:
    """MEM + SSD block cache with single-flight fills. Thread-safe; one per cache dir is enough."""

    def __init__(self, settings: CacheSettings, *, databases: Sequence[str] = ()) -> None:
        """``databases``: other sqlite files beside the index (the metadata cache's), whose
        bytes the SSD tier counts with the index's when they are in its first directory."""
        self.settings = settings
        self.mem = MemoryTier(
            quota_bytes=settings.mem_quota,
            policy=policy_by_name(settings.eviction_policy),
            read_buffer_bytes=max(
                settings.block_size,
                min(_READ_BUFFER_BLOCKS * settings.block_size, _READ_BUFFER_CAP_BYTES),
            ),
        )
        self.ssd = SSDTier(settings, policy_by_name(settings.eviction_policy), databases=databases)
        self._flights = FlightMap()
        # SSD reads and writes of MiB-sized blocks run here, off the event loop.
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, settings.fetch_concurrency), thread_name_prefix=_IO_THREADS
        )
        self._writes: set[concurrent.futures.Future[None]] = set()
        """Block writes handed to the I/O threads and not done yet (close waits for them)."""
        self._writes_lock = threading.Lock()
        self._pages_due: list[tuple[BlockKey, bytes]] = []
        """Pages of :meth:`put_soon` waiting for the one write that is scheduled, if any."""
        self.backend_fetches = 0
        """Blocks fetched from the backend by this process (for tests and stats)."""
        self._seen_once: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        _OPEN.add(self)

    # --- hits ----------------------------------------------------------------------------------
    def get_cached(self, key: BlockKey, *, hold: bool = True) -> bytes | None:
        """The block if a tier holds it (MEM, else SSD); never fetches. An SSD block is
        promoted to MEM the second time it is read; until then it is held in the read buffer
        for reads of its other parts, unless ``hold`` is False (the caller reads all of it)."""
        data = self.mem.get(key.digest)
        if data is not None:
            self._count_hit("mem", len(data))
            return data
        data = self.ssd.read(key)
        if data is not None:
            self._count_hit("ssd", len(data))
            self._promote(key, data, hold=hold)
        return data

    def open_block(self, key: BlockKey) -> OpenBlock | None:
        """The block open for reads of its parts if a tier holds it; never fetches.

        A file handle reads the block it is in through this: from MEM, the bytes in memory;
        from the SSD tier, the open block file, each part read verified when it is read (a
        segmented block reads only the segments a part covers, see
        :class:`~edgecache.cache._blockfile.BlockFile`). One hit is counted per open. The
        second time a block that fits in MEM is opened from disk it is read whole and kept
        in MEM, as :meth:`get_cached` does.
        """
        digest = key.digest
        data = self.mem.get(digest)
        if data is not None:
            self._count_hit("mem", len(data))
            return HeldBlock(data)
        if key.block_size <= self.mem.quota_bytes and self._seen_before_peek(digest):
            data = self.get_cached(key)
            return None if data is None else HeldBlock(data)
        block = self.ssd.open_block(key)
        if block is not None:
            self._count_hit("ssd", block.length)
            if key.block_size <= self.mem.quota_bytes:  # else MEM never keeps it: nothing to note
                self._seen_before(digest)
        return block

    def _promote(self, key: BlockKey, data: bytes, *, hold: bool = True) -> None:
        # Promotion on the second SSD read: a block read once (a scan, a one-off file) does not
        # push hot blocks out of MEM, and does not cost fresh memory for nothing. Until then it
        # stays in the read buffer, for the reads of its other parts that usually follow.
        # A block MEM cannot keep (mem_quota=0, or smaller than the block) is only held: put
        # there it would be evicted at once, and its demotion would ask the disk for its file.
        # A block its reader takes whole (a small file) is not held: no part of it is read
        # next, and the buffer would keep each block's bytes alive, so every read from disk
        # would go to memory long out of the CPU's caches (about 35 us of CPU per 16 KiB file
        # read with mem_quota=0, against reusing the memory the last read let go of).
        if len(data) <= self.mem.quota_bytes and self._seen_before(key.digest):
            self._demote(self.mem.put(key, data))
        elif hold:
            self.mem.hold(key.digest, data)

    def holds(self, key: BlockKey) -> bool:
        """Whether a tier has the block: in MEM, or a block file on SSD (not verified)."""
        return key.digest in self.mem or self.ssd.contains(key)

    def get_cached_into(self, key: BlockKey, out: memoryview) -> bool:
        """Like :meth:`get_cached`, but puts the block into ``out`` (exactly its length).

        Reads of many blocks assemble them in one buffer this way. An SSD block is promoted to
        MEM only when it is read this way a second time: a one-off scan of a large file is
        read straight into ``out`` (one copy), instead of filling MEM with fresh memory it
        will never read again and copying every block twice.
        """
        data = self.mem.get(key.digest)
        if data is not None:
            if len(data) != len(out):
                return False
            out[:] = data
            self._count_hit("mem", len(data))
            return True
        fits = len(out) <= self.mem.quota_bytes
        if fits and self._seen_before_peek(key.digest):
            # Its second read: get_cached reads it and, noting that, keeps it in MEM (noted
            # here first, get_cached would take it for a first read and keep nothing).
            data = self.get_cached(key)
            if data is None or len(data) != len(out):
                return False
            out[:] = data
            return True
        if not self.ssd.read_into(key, out):
            return False
        if fits:
            self._seen_before(key.digest)  # its first read: the next one keeps it
        self._count_hit("ssd", len(out))
        return True

    def get_cached_many_into(self, pieces: list[tuple[BlockKey, memoryview]]) -> bool:
        """:meth:`get_cached_into` for several blocks, read and verified in parallel threads
        (file reads and checksums release the GIL, so a warm read of a large file uses every
        core). False if any block is missing; the others may have been filled.

        Returns (or raises) only once no thread writes into any of the pieces any more: they
        are views of the caller's buffer (a ``bytes`` being filled, see
        :func:`edgecache.buffers.filled_bytes`), which is freed as soon as the caller gives up
        on it, so a thread still reading a block into it would write into freed memory."""
        if len(pieces) < 2:
            return all(self.get_cached_into(key, out) for key, out in pieces)
        futures: list[concurrent.futures.Future[bool]] = []
        try:
            for key, out in pieces:
                futures.append(self._io.submit(self.get_cached_into, key, out))
        except BaseException:
            _wait_for_all(futures, cancel=True)  # the pool was shut down under us
            raise
        _wait_for_all(futures)
        return all(future.result() for future in futures)

    def _seen_before_peek(self, digest: str) -> bool:
        # Whether MEM would keep this block if it were read whole now (its second read).
        with self._seen_lock:
            return digest in self._seen_once

    def _seen_before(self, digest: str) -> bool:
        with self._seen_lock:
            if digest in self._seen_once:
                del self._seen_once[digest]
                return True
            self._seen_once[digest] = None
            if len(self._seen_once) > _SEEN_ONCE_LIMIT:
                self._seen_once.popitem(last=False)
            return False

    def _count_hit(self, tier: str, size: int) -> None:
        CACHE_READS.hit(tier, size)
        self.ssd.count_hit(tier, size)

    def _demote(self, evicted: list[tuple[BlockKey, bytes]]) -> None:
        # MEM evictions go down to SSD unless SSD holds them already (it usually does: fills
        # are written through; it does not when SSD evicted them since, or was unusable).
        for key, data in evicted:
            if not self.ssd.contains(key):
                self.ssd.write(key, data)

    # --- misses --------------------------------------------------------------------------------
    async def get(
        self, key: BlockKey, fetch: BlockFetcher, *, expected_size: int | None = None
    ) -> bytes:
        """The block's bytes from the fastest tier holding it, else from ``fetch`` (once)."""
        data = self.mem.get(key.digest)
        if data is not None:
            self._count_hit("mem", len(data))
            return data
        loop = asyncio.get_running_loop()
        # A block with no file is a miss without an I/O thread's turn (and the index look-up
        # a missing file costs, which the fill under the block lock makes anyway): a cold
        # read paid both twice per block.
        if self.ssd.contains(key):
            hit = await loop.run_in_executor(self._io, self._ssd_hit, key)
            if hit is not None:
                return hit
        while True:
            future, leader = self._flights.join(key.digest)
            if leader:
                break
            waiter = asyncio.wrap_future(future)
            waiter.add_done_callback(_retrieve)
            try:
                # Shielded: a follower giving up (timeout, cancel) must not cancel the shared
                # future, which would break the leader and every other follower.
                return await asyncio.shield(waiter)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.done() or (task is not None and task.cancelling()):
                    raise
                # The leader was cancelled, not this caller: try again (maybe as the leader).
        try:
            data = await self._fill(key, fetch, expected_size, flight=future)
        except BaseException as exc:
            if not future.done():  # else the followers have the block: only storing failed
                future.set_exception(exc)
                # Followers re-raise it; nobody may be waiting, so mark it retrieved.
                future.exception()
            raise
        else:
            if not future.done():
                future.set_result(data)
            return data
        finally:
            self._flights.land(key.digest)

    def _ssd_hit(self, key: BlockKey) -> bytes | None:
        data = self.ssd.read(key)
        if data is not None:
            self._count_hit("ssd", len(data))
            self._promote(key, data)
        return data

    async def settled(self, key: BlockKey) -> None:
        """Returns once no fetch of ``key`` is in progress in this process: a block a
        follower got early (see :meth:`get`) is stored, or its store failed, by then."""
        landing = self._flights.landing(key.digest)
        if landing is not None:
            await asyncio.shield(asyncio.wrap_future(landing))

    async def _fill(
        self,
        key: BlockKey,
        fetch: BlockFetcher,
        expected_size: int | None,
        *,
        flight: concurrent.futures.Future[bytes],
    ) -> bytes:
        loop = asyncio.get_running_loop()
        if not self.ssd.available:
            # Counted per read, as the metric says: how many reads the SSD tier failed to serve.
            CACHE_BYPASS.labels(self.ssd.unavailable_reason or "closed").inc()
            data = await self._fetch(key, fetch, expected_size)
            self._demote(self.mem.put(key, data))
            return data
        async with stripe_lock(self.ssd.lock_path(key.digest)):
            # Another process may have stored the block while we waited for the lock.
            hit = await loop.run_in_executor(self._io, self._ssd_hit, key)
            if hit is not None:
                return hit
            data = await self._fetch(key, fetch, expected_size)
            # The followers (other readers of the block, a pool peer's request for it) go on
            # with the block now; the leader returns once it is stored, under the lock, so
            # other processes find it on disk. Waiting for the disk too cost an owner's askers
            # a block store each (p50 150 ms for 4 MiB on a loaded machine), on top of their own.
            flight.set_result(data)
            await loop.run_in_executor(self._io, self._store, key, data)
        return data

    async def _fetch(self, key: BlockKey, fetch: BlockFetcher, expected_size: int | None) -> bytes:
        backend = key.backend.split("|", 1)[0]
        CACHE_MISSES.inc()
        self.ssd.count("misses", "")
        started = time.perf_counter()
        try:
            fetched = await fetch()
        except BaseException:
            BACKEND_ERRORS.labels(backend).inc()
            raise
        if isinstance(fetched, Fetched):
            data, source = fetched.data, fetched.source
        else:
            data, source = fetched, "backend"
            BACKEND_FETCH_SECONDS.labels(backend).observe(time.perf_counter() - started)
        if expected_size is not None and len(data) != expected_size:
            raise ObjectChangedError(
                f"{key.path}: block {key.index} came back with {len(data)} bytes, expected "
                f"{expected_size}; the object changed while it was read"
            )
        data = bytes(data)
        if source == "backend":
            self.backend_fetches += 1
            BACKEND_BYTES.labels(backend).inc(len(data))
        CACHE_READS.served(source, len(data))
        self.ssd.count("bytes", source, len(data))
        return data

    def _store(self, key: BlockKey, data: bytes) -> None:
        # SSD first: it is what other processes and later runs see, and it makes the MEM
        # eviction that may follow a no-op demotion.
        self.ssd.write(key, data)
        self._demote(self.mem.put(key, data))

    def put(self, key: BlockKey, data: bytes) -> None:
        """Store a block that was obtained elsewhere (prefetch, peers)."""
        self._store(key, data)

    def put_soon(self, blocks: list[tuple[BlockKey, bytes]]) -> None:
        """Store small blocks just fetched (the pages of a sparse read) without making the
        reader wait for the disk: held in memory at once (the read buffer), written to the
        SSD tier (and MEM) on an I/O thread."""
        for key, data in blocks:
            self.mem.hold(key.digest, data)
        with self._writes_lock:
            scheduled = bool(self._pages_due)
            self._pages_due.extend(blocks)
        if not scheduled:
            self._write_behind(self._store_due_pages)

    def _store_due_pages(self) -> None:
        """On an I/O thread: after :data:`_PAGE_WRITE_DELAY_SECONDS`, write every page handed
        to :meth:`put_soon` until now (one thread waits, however many reads gave pages)."""
        time.sleep(_PAGE_WRITE_DELAY_SECONDS)
        with self._writes_lock:
            blocks, self._pages_due = self._pages_due, []
        self._store_all(blocks)

    def _write_behind(self, write: Callable[..., None], *args: Any) -> None:
        """Run ``write(*args)`` on an I/O thread, counted as pending until it is done."""
        try:
            future = self._io.submit(write, *args)
        except RuntimeError:
            return  # closed: the block stays uncached, as after a full disk
        with self._writes_lock:
            self._writes.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: concurrent.futures.Future[None]) -> None:
        with self._writes_lock:
            self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("storing fetched blocks failed: %s", future.exception())

    def _store_all(self, blocks: list[tuple[BlockKey, bytes]]) -> None:
        for key, data in blocks:
            if not self.ssd.contains(key):
                self.ssd.write(key, data)

    def invalidate(self, keys: list[BlockKey]) -> None:
        """Drop blocks of an object version that was overwritten or deleted."""
        for key in keys:
            self.mem.discard(key.digest)
            self.ssd.discard(key)

    @asynccontextmanager
    async def exclusive(self, name: str, *, wait_seconds: float) -> AsyncIterator[None]:
        """Hold the cache directory's cross-process lock for ``name`` (one of the stripes the
        block fetches use) around work the other processes on this directory should not do
        at the same time, only read the result of (a directory listing four DataLoader
        workers all need at once). Unlocked if the lock cannot be taken (no usable lock file,
        another holder for longer than ``wait_seconds``)."""
        digest = xxhash.xxh3_128_hexdigest(name.encode())
        async with stripe_lock(self.ssd.lock_path(digest), wait_seconds=wait_seconds):
            yield

    # --- pins and stats ------------------------------------------------------------------------
    def pin(self, name: str, *, backend: str, prefix: str, reserve_bytes: int) -> None:
        """Keep blocks of ``backend`` under path ``prefix`` from eviction (PinError if too big)."""
        self.ssd.pin(name, backend=backend, prefix=prefix, reserve_bytes=reserve_bytes)

    def unpin(self, name: str) -> bool:
        """Release a pin; True if it existed."""
        return self.ssd.unpin(name)

    def charge(self, name: str, size: int) -> bool:
        """Count ``size`` bytes kept outside the cache (a view's files) as pinned usage of
        the SSD quota, evicting unpinned blocks for them; False when they do not fit (see
        :meth:`SSDTier.charge`)."""
        return self.ssd.charge(name, size)

    def charges(self) -> dict[str, int]:
        """Bytes charged to the SSD quota, by name."""
        return self.ssd.charges()

    def apply(self, store: StoreSettings, *, for_every_process: bool = False) -> None:
        """Use ``store`` from now on: the SSD quotas, watermarks and compression (see
        :meth:`SSDTier.apply`), the MEM bound (blocks a lowered one evicts are demoted as any
        MEM eviction) and the eviction policy of both tiers. MEM takes its own even when the SSD
        tier is unusable: its TierUnavailableError is raised after."""
        old = self.settings
        unavailable: TierUnavailableError | None = None
        try:
            self.ssd.apply(store, for_every_process=for_every_process)
        except TierUnavailableError as exc:
            unavailable = exc
        policy = policy_by_name(store.eviction_policy)  # stateless: the tiers' state stays
        self._demote(self.mem.apply(quota_bytes=store.mem_quota, policy=policy))
        self.settings = CacheSettings(
            store=store,
            read=old.read,
            metadata=old.metadata,
            health=old.health,
            qos=old.qos,
        )
        if unavailable is not None:
            raise unavailable

    def stats(self) -> dict[str, Any]:
        """Usage and cumulative counters per tier (counters of every process on this dir)."""
        counters = self.ssd.counters()

        def c(name: str, label: str = "") -> int:
            return counters.get((name, label), 0)

        usage = self.ssd.usage()
        ssd_dirs = [
            {
                "path": path,
                "quota_bytes": quota,
                "used_bytes": next((u.used for u in usage if u.dir == i), 0),
                "pinned_bytes": next((u.pinned for u in usage if u.dir == i), 0),
                "blocks": next((u.blocks for u in usage if u.dir == i), 0),
                "charged_bytes": next((u.charged for u in usage if u.dir == i), 0),
            }
            for i, (path, quota) in enumerate(
                zip(self.ssd.directories, self.ssd.quotas, strict=True)
            )
        ]
        hits = c("hits", "mem") + c("hits", "ssd")
        reads = hits + c("misses")
        return {
            "cache_dir": self.settings.cache_dir,
            "ssd_available": self.ssd.available,
            "block_size": self.settings.block_size,
            "tiers": {
                "mem": {
                    "hits": c("hits", "mem"),
                    "bytes_served": c("bytes", "mem"),
                    "used_bytes": self.mem.usage_bytes,
                    "quota_bytes": self.mem.quota_bytes,
                    "note": "MEM usage is this process's",
                },
                "ssd": {
                    "hits": c("hits", "ssd"),
                    "bytes_served": c("bytes", "ssd"),
                    "used_bytes": sum(d["used_bytes"] for d in ssd_dirs),
                    "quota_bytes": sum(self.ssd.quotas),
                    "charged_bytes": sum(d["charged_bytes"] for d in ssd_dirs),
                    "database_bytes": self.ssd.database_bytes(),
                    "evictions": c("evictions", "ssd"),
                    "corrupt_blocks": c("corrupt_blocks"),
                    "missing_blocks": c("missing_blocks"),
                    "directories": ssd_dirs,
                },
                "backend": {"fetches": c("misses"), "bytes_fetched": c("bytes", "backend")},
                "peer": {"bytes_fetched": c("bytes", "peer")},
            },
            "hit_ratio": (hits / reads) if reads else None,
            "index": self._index_report(),
            "pins": [p.__dict__ for p in self.ssd.pins()] if self.ssd.available else [],
        }

    def _index_report(self) -> dict[str, Any]:
        rebuilt = self.ssd.rebuilt
        if rebuilt is None:
            return {"state": "ok"}
        return {
            "state": "rebuilt",
            "moved_to": rebuilt.moved_to,
            "blocks_kept": rebuilt.blocks,
            "pins_kept": rebuilt.pins,
        }

    def check(self) -> list[str]:
        """Ask sqlite whether the index is sound (fast); a damaged one is rebuilt from the block
        files. What it reported (empty: sound)."""
        return self.ssd.check_index(full=False)

    def verify(self) -> dict[str, Any]:
        """Check and repair everything the SSD tier keeps (``edgecache stats --verify``): the
        index (full integrity check, rebuilt if damaged), its running sums, every block's
        checksum, block files against rows. ``damage_found`` says whether anything was wrong.
        O(cached bytes)."""
        rebuilt_before = self.ssd.rebuilt
        problems = self.ssd.check_index(full=True)
        corrupt, rows_corrected = self.ssd.verify_blocks()
        files = self.ssd.reconcile()
        accounting_fixed = self.ssd.fix_accounting()
        report: dict[str, Any] = {
            "index_problems": problems[:10],
            "accounting_fixed": accounting_fixed,
            "rows_corrected": rows_corrected,
            "corrupt_blocks": corrupt,
            **files,
        }
        report["damage_found"] = bool(
            problems
            or self.ssd.rebuilt is not rebuilt_before
            or accounting_fixed
            or rows_corrected
            or corrupt
            or files["removed_files"]
            or files["removed_rows"]
        )
        return report

    def flush(self) -> None:
        """Write pending hit and counter batches to the index."""
        self.ssd.flush()

    def close(self) -> None:
        """Finish the block writes still pending (at most :data:`_CLOSE_WAIT_SECONDS`; the
        ones that run later find the tier closed and store nothing), then flush, close the
        index and stop the I/O threads. Closing the index under a write would lose the block
        and log errors."""
        with self._writes_lock:
            pending = list(self._writes)
        if pending and not threading.current_thread().name.startswith(_IO_THREADS):
            _, late = concurrent.futures.wait(pending, timeout=_CLOSE_WAIT_SECONDS)
            if late:
                log.warning(
                    "closing the cache with %d block writes unfinished after %.0f s: "
                    "those blocks are not cached",
                    len(late),
                    _CLOSE_WAIT_SECONDS,
                )
        # The index first, the threads after: a read still in flight on another thread finds
        # the tier closed (a miss), where a stopped executor would fail it.
        self.ssd.close()
        self._io.shutdown(wait=False)


def _retrieve(waiter: asyncio.Future[bytes]) -> None:
    # A follower that gave up leaves its waiter unread: mark its exception seen, quietly.
    if not waiter.cancelled():
        waiter.exception()


def _forget_the_parents() -> None:
    # A forked child never touches its parent's caches (their index connection, locks and I/O
    # threads are the parent's): not at exit either. It opens its own.
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents)


@atexit.register
def _flush_all() -> None:
    for cache in list(_OPEN):
        try:
            cache.flush()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            log.debug("flush at exit failed", exc_info=True)


def _wait_for_all(futures: list[concurrent.futures.Future[bool]], *, cancel: bool = False) -> None:
    """Wait until every one of ``futures`` has finished (or, with ``cancel``, was cancelled
    before it started), even through an exception raised in the waiting thread (Ctrl-C): the
    first such exception is raised again afterwards."""
    if cancel:
        for future in futures:
            future.cancel()  # one not started yet never touches the buffer
    interrupted: BaseException | None = None
    while True:
        try:
            concurrent.futures.wait(futures)
            break
        except BaseException as exc:  # re-raised below, once nothing writes any more
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
