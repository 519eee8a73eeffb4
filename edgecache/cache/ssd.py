"""The SSD tier: block files in one or more directories, each with a byte quota and watermarks.

Below the MEM tier in :class:`~edgecache.cache.tiered.TieredCache`. A block lives in exactly one
directory, chosen from its digest by weighted rendezvous hashing (weights = quotas), at
``<dir>/blocks/<2 hex>/<digest>``; finding it needs no index lookup. Files are written to
``<dir>/tmp`` and renamed into place, so a reader sees a whole block or none. Every read verifies
the block's checksum (:mod:`edgecache.cache._blockfile`); a corrupt, truncated or missing block is
counted, removed and reported as a miss.

Bookkeeping (quota, eviction policy state, pins, counters) is in :mod:`edgecache.cache._index`.
Hits are recorded in memory and written to the index in batches, so a warm read costs a file
read and no database write.

Failures of the directory itself (disk full, read-only, permissions, deleted underneath) never
reach the reader: the tier reports itself unavailable, the cache serves from the backend, logs a
warning, counts ``edgecache_cache_bypass`` and tries the directory again after ``ssd_retry_seconds``
(:class:`~edgecache.config.StoreSettings`). An index held by
another process (a SIGSTOPped prefetch in the middle of a transaction) is waited on for
:data:`~edgecache.cache._index.BUSY_TIMEOUT_SECONDS`; then that operation bypasses the tier and
the writes of the next 30 s do too, but nothing is declared corrupt. Only damage sqlite itself
reports makes the tier rebuild the index from the block files (:func:`open_index`).

The directories are claimed first (:mod:`edgecache.cache._cachedir`): a non-empty directory
without our ``CACHEDIR.TAG`` is refused, and the tier deletes only files it recognises as its
own (temp files by name, block files by name and header); anything else is left where it is.

Hits and counters are written by a background thread at least every
:data:`FLUSH_EVERY_SECONDS` (and as soon as :data:`FLUSH_EVERY_HITS` hits are pending), so a
killed process loses at most that batch of counts. Hits of a block whose row they would not
change (S3-FIFO at its saturated frequency) are not noted for :data:`_SETTLED_SECONDS`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import xxhash

from edgecache.cache._blockfile import (
    BlockFile,
    CorruptBlockError,
    encode_block,
    inspect_block_file,
    read_block,
    read_block_into,
)
from edgecache.cache._cachedir import claim_directory, is_temp_name
from edgecache.cache._index import (
    BlockIndex,
    DirUsage,
    FoundBlock,
    PinRecord,
    RebuildReport,
    file_identity,
    is_busy,
    is_corruption,
    open_index,
    sqlite_code,
)
from edgecache.cache._keys import BlockKey
from edgecache.cache.eviction import EvictionPolicy, policy_by_name, show_policy
from edgecache.config import CacheSettings, StoreSettings
from edgecache.errors import ConfigError, TierUnavailableError
from edgecache.metrics import (
    CACHE_BYPASS,
    CACHE_CORRUPT_BLOCKS,
    CACHE_EVICTIONS,
    CACHE_MISSING_BLOCKS,
    CACHE_QUOTA_BYTES,
    CACHE_USAGE_BYTES,
)
from edgecache.sqlitefiles import WAL_BOUND_BYTES, disk_bytes

__all__ = ["SSDTier", "TierUnavailableError"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
FLUSH_EVERY_SECONDS = 1.0
"""Most seconds a hit or counter waits in memory before it is written to the index: what a
killed process can lose."""
FLUSH_EVERY_HITS = 1 << 16
"""Pending hits (distinct blocks) that make the flusher write at once: bounds memory on a hot
read loop (~100 bytes a block). Large, because each flush costs the readers more than its own
CPU (the flusher takes the GIL between their system calls) and a block hit again within the
second is written once: with 512, warm small-file reads from the SSD ran at 40-70 µs a file
for their first passes, against 26 µs with nothing written (10,000 x 16 KiB,
mem_quota=0)."""
_SETTLED_SECONDS = 30.0
"""How long a block whose row a hit would not change (S3-FIFO at its saturated frequency)
is read without noting its hits: a warm loop over thousands of files then costs the flusher
nothing, where each hit cost a row look-up (~10 µs of CPU, and the reader's GIL). Another
process may lower that frequency meanwhile; this process's hits count again after this long."""
_SETTLED_KEPT = 1 << 17
"""Most settled digests remembered (~100 bytes each)."""
_BUSY_BACKOFF_SECONDS = 30.0
_INDEX_CHECK_SECONDS = 2.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "not_ours"
    if is_corruption(exc):
        return "index_damaged"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return "read_only"
    if isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
    ):
        return "permission"
    if isinstance(exc, FileNotFoundError):
        return "directory_missing"
    if isinstance(exc, sqlite3.Error):
        code = sqlite_code(exc)
        # sqlite reports a full disk as its own error (SQLITE_FULL), not as ENOSPC.
        if code == sqlite3.SQLITE_FULL:
            return "disk_full"
        if code == sqlite3.SQLITE_READONLY:
            return "read_only"
        if code == sqlite3.SQLITE_CANTOPEN:
            return "permission"
        if is_busy(exc):
            return "index_busy"
        return "index_error"
    return "io_error"


class SSDTier:
    """Verified block files under quota; shared by every process using the same directories."""

    def __init__(
        self, settings: CacheSettings, policy: EvictionPolicy, *, databases: Sequence[str] = ()
    ) -> None:
        """``databases``: see :class:`~edgecache.cache.tiered.TieredCache`."""
        self._settings = settings
        self._policy = policy
        self._dirs = [d.path for d in settings.ssd_directories]
        first = os.path.realpath(self._dirs[0])
        self._databases = [os.path.join(self._dirs[0], INDEX_NAME)] + [
            path for path in databases if os.path.realpath(os.path.dirname(path)) == first
        ]
        """The sqlite databases in the first directory: the index, and those beside it."""
        self._block_roots = [os.path.join(d, "blocks") for d in self._dirs]
        self._quotas = [d.quota_bytes for d in settings.ssd_directories]
        self._weights = [xxhash.xxh64_intdigest(p.encode()) for p in self._dirs]
        self._index: BlockIndex | None = None
        self._unavailable_until = 0.0
        self._warned: set[str] = set()
        self.unavailable_reason = ""
        """Why the tier last went out of service (the ``edgecache_cache_bypass`` label)."""
        self._lock = threading.Lock()
        self._pending_hits: dict[str, int] = {}
        self._settled: set[str] = set()
        """Blocks whose hits change nothing now (see :data:`_SETTLED_SECONDS`)."""
        self._settled_since = time.monotonic()
        self._pending_counters: dict[tuple[str, str], int] = {}
        self._last_flush = time.monotonic()
        self._last_index_check = time.monotonic()
        self._index_inode: tuple[int, int] = (0, 0)
        self._damaged_index: tuple[int, int] | None = None
        self.rebuilt: RebuildReport | None = None
        """Set when this process found the index damaged and rebuilt it from the block files."""
        self._busy_until = 0.0
        for i, quota in enumerate(self._quotas):
            CACHE_QUOTA_BYTES.labels(f"ssd{i}" if i else "ssd").set(quota)
        show_policy("ssd", policy)
        # A directory that is not ours is a configuration error the user must see; one that
        # cannot be created or read is a bypass, reported by _open like any unusable directory.
        with contextlib.suppress(OSError):
            self._claim()
        self._open()
        self._flush_wanted = threading.Event()
        self._closing = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="edgecache-flush", daemon=True
        )
        self._flusher.start()

    # --- availability --------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether the tier can be used now (re-tries a failed directory every
        ``ssd_retry_seconds``)."""
        now = time.monotonic()
        if self._index is not None:
            if now - self._last_index_check > _INDEX_CHECK_SECONDS:
                self._last_index_check = now
                self._check_index_file()
            return self._index is not None
        if now >= self._unavailable_until:
            self._open()
        return self._index is not None

    def _check_index_file(self) -> None:
        # A cache directory deleted (or replaced) underneath us leaves our sqlite connection on
        # an unlinked inode; notice it and start over on the new directory.
        try:
            st = os.stat(os.path.join(self._dirs[0], INDEX_NAME))
            if (st.st_dev, st.st_ino) == self._index_inode:
                return
            exc: OSError = FileNotFoundError(errno.ENOENT, "cache index was replaced")
        except OSError as err:
            exc = err
        self._fail(exc, "checking the index")
        self._unavailable_until = 0.0

    def _claim(self) -> None:
        # The metadata database lives in cache_dir even when the blocks are elsewhere.
        for path in dict.fromkeys([self._settings.cache_dir, *self._dirs]):
            claim_directory(path)

    def _open(self) -> None:
        with self._lock:
            if self._index is not None:
                return
            try:
                self._claim()
                for path in self._dirs:
                    os.makedirs(os.path.join(path, "blocks"), exist_ok=True)
                    os.makedirs(os.path.join(path, "tmp"), exist_ok=True)
                    self._clean_tmp(path)
                os.makedirs(self._lock_dir, exist_ok=True)
                index_path = os.path.join(self._dirs[0], INDEX_NAME)
                index, rebuilt = open_index(
                    index_path,
                    quotas=self._quotas,
                    policy=self._policy,
                    found_blocks=self._found_blocks,
                    repair_lock=os.path.join(self._lock_dir, "index.lock"),
                    damaged=self._damaged_index,
                )
                self._index = index
                self._damaged_index = None
                self._measure_databases()
                self._index_inode = file_identity(index_path) or (0, 0)
                self._warned.clear()
                if rebuilt is not None:
                    self.rebuilt = rebuilt
                    # Straight into the pending batch: self._lock is held here.
                    key = ("index_rebuilds", "")
                    self._pending_counters[key] = self._pending_counters.get(key, 0) + 1
            except (OSError, sqlite3.Error, ConfigError, UnicodeDecodeError) as exc:
                self._index = None
                busy = isinstance(exc, sqlite3.Error) and is_busy(exc)
                retry = _BUSY_BACKOFF_SECONDS if busy else self._settings.ssd_retry_seconds
                self._unavailable_until = time.monotonic() + retry
                self._degrade(exc, "opening")

    def _found_blocks(self) -> Iterator[FoundBlock]:
        """Our block files in every directory (for a new index to account for them)."""
        for dir_id, path in enumerate(self._dirs):
            for file_path in self._block_files(path):
                info = inspect_block_file(file_path)
                if info is not None:
                    yield FoundBlock(info.digest, dir_id, info.file_size, info.raw_len, info.mtime)

    @staticmethod
    def _block_files(path: str) -> Iterator[str]:
        """Paths of the entries in the directories under ``<path>/blocks`` (where block files
        live; whether each is one is for :func:`inspect_block_file` to say)."""
        blocks = os.path.join(path, "blocks")
        try:
            prefixes = os.listdir(blocks)
        except OSError:
            return
        for prefix in prefixes:
            try:
                names = os.listdir(os.path.join(blocks, prefix))
            except OSError:
                continue  # not a directory (nothing of ours), or gone
            for name in names:
                yield os.path.join(blocks, prefix, name)

    def _degrade(self, exc: BaseException, doing: str) -> None:
        reason = _reason(exc)
        if reason in ("permission", "index_error", "io_error") and self._on_read_only_disk():
            # sqlite says "unable to open" or "readonly" in many ways; the mount says it once.
            reason = "read_only"
        self.unavailable_reason = reason
        CACHE_BYPASS.labels(reason).inc()
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning(
                "SSD cache tier %s unusable while %s (%s: %s); reading straight from the backend",
                self._dirs[0],
                doing,
                reason,
                exc,
            )

    def _on_read_only_disk(self) -> bool:
        try:
            return any(os.statvfs(d).f_flag & os.ST_RDONLY for d in self._dirs)
        except OSError:
            return False

    def _fail(self, exc: BaseException, doing: str) -> None:
        """Take the tier out of service after an error of the directory itself.

        An index busy beyond the timeout only makes this operation (and the writes of the next
        30 s) bypass the tier; an index sqlite reports as damaged is rebuilt on next use.
        """
        if isinstance(exc, sqlite3.ProgrammingError) and "closed database" in str(exc):
            # Another thread closed the index under this operation: it took the tier out of
            # service (the reason is the one it recorded, a full disk say, not "closed") or
            # replaced the index (a damaged one, rebuilt): neither is this operation's failure.
            # (The flusher recording hits met the second and took a rebuilt tier down.)
            return
        if isinstance(exc, sqlite3.Error) and is_busy(exc):
            self._degrade(exc, doing)
            self._busy_until = time.monotonic() + _BUSY_BACKOFF_SECONDS
            return
        if is_corruption(exc):
            self._degrade(exc, doing)
            with self._lock:
                index, self._index = self._index, None
                self._damaged_index = self._index_inode
                self._unavailable_until = 0.0  # rebuild at the next use, not after the retry delay
            if index is not None:
                with contextlib.suppress(sqlite3.Error):
                    index.close()
            return
        self._degrade(exc, doing)
        with self._lock:
            index, self._index = self._index, None
            self._unavailable_until = time.monotonic() + self._settings.ssd_retry_seconds
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                index.close()

    @property
    def _lock_dir(self) -> str:
        return os.path.join(self._dirs[0], "locks")

    def lock_path(self, digest: str) -> str:
        """Lock file guarding fetches of ``digest`` across processes (4096 stripes)."""
        return os.path.join(self._lock_dir, digest[:3] + ".lock")

    @staticmethod
    def _clean_tmp(path: str) -> None:
        # Temp files of writers that died before renaming (names carry the writer's pid).
        # Anything not named like one of ours is not ours: it stays.
        tmp = os.path.join(path, "tmp")
        for name in os.listdir(tmp):
            pid = is_temp_name(name)
            if pid is None or (pid > 0 and pid != os.getpid() and _pid_alive(pid)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(tmp, name))

    # --- placement -----------------------------------------------------------------------------
    def _dir_for(self, digest: str) -> int:
        if len(self._dirs) == 1:
            return 0
        best, best_score = 0, -math.inf
        for i, (seed, quota) in enumerate(zip(self._weights, self._quotas, strict=True)):
            h = (xxhash.xxh64_intdigest(digest.encode(), seed=seed) + 1) / 2.0**64
            score = -quota / math.log(h) if quota > 0 else -math.inf
            if score > best_score:
                best, best_score = i, score
        return best

    def _block_path(self, digest: str, dir_id: int | None = None) -> str:
        root = self._block_roots[self._dir_for(digest) if dir_id is None else dir_id]
        # What os.path.join(d, "blocks", digest[:2], digest) gives, without its few
        # microseconds per call (a tenth of a warm small-file read).
        return f"{root}/{digest[:2]}/{digest}"

    # --- reads ---------------------------------------------------------------------------------
    def read(self, key: BlockKey) -> bytes | None:
        """The verified bytes of ``key``'s block, or None on a miss (corruption included)."""
        got = self._read(key, None)
        assert not isinstance(got, (bool, BlockFile))
        return got

    def read_into(self, key: BlockKey, out: memoryview) -> bool:
        """Like :meth:`read`, but into ``out`` (exactly the block's length); False on a miss."""
        return self._read(key, out) is True

    def open_block(self, key: BlockKey) -> BlockFile | None:
        """The block open for reads of parts of it, each verified as it is read from disk
        (:class:`~edgecache.cache._blockfile.BlockFile`: a damaged file is handled as any
        corrupt block, counted, removed and re-fetched on the next read, and the read returns
        None); None on a miss. The caller closes it."""
        got = self._read(key, "open")
        assert got is None or isinstance(got, BlockFile)
        return got

    def _read(self, key: BlockKey, out: memoryview | str | None) -> bytes | bool | BlockFile | None:
        # The block's bytes; True once they were put into ``out``; a BlockFile (``out`` is
        # "open"); None on a miss.
        if not self.available:
            return None
        digest = key.digest
        path = self._block_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._check_missing(digest, path)
            return None
        except OSError as exc:
            self._fail(exc, "reading")
            return None
        kept = False
        try:
            data: bytes | bool | BlockFile
            if isinstance(out, memoryview):
                read_block_into(fd, out, digest=digest)
                data = True
            elif out is None:
                data = read_block(fd, digest=digest, max_raw_len=key.block_size)
            else:
                failed = functools.partial(self.read_failed, key, path)
                data = BlockFile(fd, digest=digest, max_raw_len=key.block_size, failed=failed)
                kept = data.holds_file
        except CorruptBlockError as exc:
            self._corrupt(digest, path, str(exc), _identity(fd))
            return None
        except OSError as exc:
            self._fail(exc, "reading")
            return None
        finally:
            if not kept:
                # Not contextlib.suppress: it costs half a microsecond, on every block read.
                try:  # noqa: SIM105
                    os.close(fd)
                except OSError:
                    pass
        self._note_hit(digest)
        return data

    def read_failed(
        self, key: BlockKey, path: str, exc: BaseException, identity: tuple[int, int] | None
    ) -> None:
        """A read of an open block (:meth:`open_block`) failed: damage (the file that was
        read, ``identity``, is removed unless replaced since) or an I/O error."""
        if isinstance(exc, CorruptBlockError):
            self._corrupt(key.digest, path, str(exc), identity)
        else:
            self._fail(exc, "reading")

    def _index_for_writes(self) -> BlockIndex | None:
        """The index, unless it is out of service or was found busy a moment ago (then the
        caller skips its bookkeeping rather than wait for the lock again)."""
        if time.monotonic() < self._busy_until:
            return None
        return self._index

    def _check_missing(self, digest: str, path: str) -> None:
        index = self._index_for_writes()
        if index is None:
            return
        try:
            # Most misses are blocks never stored: a read (which never waits in WAL mode)
            # says so without taking the write lock.
            if not index.contains(digest):
                return
            # A row whose file is still being written (by another thread or process), or was
            # renamed into place since our miss, is no lost block: leave it, or that file
            # would be accounted for by nobody.
            if index.forget(digest, if_missing=path, written=True):
                # Accounted for and written, but gone: deleted underneath, or an evicting
                # process was killed between unlinking and committing. A miss, and no
                # corruption: counted apart.
                CACHE_MISSING_BLOCKS.inc()
                self.count("missing_blocks", "")
        except sqlite3.Error as exc:
            self._fail(exc, "updating the index")

    def _corrupt(self, digest: str, path: str, why: str, identity: tuple[int, int] | None) -> None:
        log.warning("cache block %s is corrupt (%s); re-fetching", digest, why)
        self._settled.discard(digest)
        CACHE_CORRUPT_BLOCKS.inc()
        self.count("corrupt_blocks", "")
        # Only the file that was read: another process may have stored a good copy since.
        if identity is not None and file_identity(path) == identity:
            with contextlib.suppress(OSError):
                os.unlink(path)
        index = self._index_for_writes()
        if index is not None:
            try:
                # Unless another reader re-fetched and stored the block in the meantime.
                index.forget(digest, if_missing=path)
            except sqlite3.Error as exc:
                self._fail(exc, "updating the index")

    def contains(self, key: BlockKey) -> bool:
        """Whether the block's file exists (not verified)."""
        return self.available and os.path.exists(self._block_path(key.digest))

    def has_file(self, key: BlockKey) -> bool:
        """Whether the block's file exists, even while the tier is out of service (prefetch
        asks what a run really stored, after a full disk took the tier down)."""
        return os.path.exists(self._block_path(key.digest))

    # --- writes --------------------------------------------------------------------------------
    def write(self, key: BlockKey, data: bytes) -> bool:
        """Store a block under quota. False when it was not stored (no room, tier unusable,
        index busy)."""
        index = self._index if self.available else None
        if index is None or time.monotonic() < self._busy_until:
            if index is not None:
                CACHE_BYPASS.labels("index_busy").inc()
            return False
        digest = key.digest
        self._settled.discard(digest)  # a new row starts afresh: its hits count
        blob = encode_block(
            data,
            digest=digest,
            compression=self._settings.compression,
            min_saving=self._settings.compression_min_saving,
        )
        dir_id = self._dir_for(digest)
        final = self._block_path(digest, dir_id)
        token = uuid.uuid4().hex
        try:
            with self._counting_evictions() as unlink:
                reserved = index.reserve(
                    digest,
                    dir_id=dir_id,
                    size=len(blob),
                    raw=len(data),
                    backend=key.backend,
                    path=key.path,
                    high=self._settings.ssd_high,
                    low=self._settings.ssd_low,
                    unlink=unlink,
                    token=token,
                )
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc, "reserving space")
            return False
        if not reserved:
            return False
        tmp = os.path.join(self._dirs[dir_id], "tmp", f"{digest}.{os.getpid()}.{token}")

        def place() -> None:
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                # First block of this prefix: create only the leaf (blocks/ itself must exist).
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.dirname(final))
                os.replace(tmp, final)

        stored = False
        try:
            # A missing tmp directory means the cache directory was deleted underneath: fail
            # (never recreate it here, or files would land outside the index that owns them).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            stored = index.complete(digest, token, place=place)
        except OSError as exc:
            with contextlib.suppress(sqlite3.Error):
                index.forget(digest, token=token)
            self._fail(exc, "writing a block")
            return False
        except sqlite3.Error as exc:
            self._fail(exc, "recording a written block")
            return False
        finally:
            if not stored:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._publish_usage()
        return stored

    def discard(self, key: BlockKey) -> None:
        """Remove a block (its object was overwritten or deleted)."""
        if not self.available:
            return
        path = self._block_path(key.digest)

        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        index = self._index_for_writes()
        if index is None:
            return  # a replaced version's blocks are never read again: eviction takes them
        try:
            if not index.contains(key.digest):
                unlink()  # not stored (the usual case): no write transaction
                return
            # File and row go in one transaction, so a block stored anew by another process
            # in between cannot lose its row (its file would then be accounted by nobody).
            if not index.forget(key.digest, unlink=unlink):
                unlink()
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc, "discarding a block")

    # --- hits, counters and flushing -----------------------------------------------------------
    def _note_hit(self, digest: str) -> None:
        if digest in self._settled:
            return
        with self._lock:
            self._pending_hits[digest] = self._pending_hits.get(digest, 0) + 1
            due = len(self._pending_hits) >= FLUSH_EVERY_HITS
        if due:
            # Written by the flusher thread: a reader never waits on the index.
            self._flush_wanted.set()

    def count_hit(self, tier: str, size: int) -> None:
        """Count one hit of ``size`` bytes served by ``tier`` (written with the next flush)."""
        with self._lock:
            counters = self._pending_counters
            hits, served = ("hits", tier), ("bytes", tier)
            counters[hits] = counters.get(hits, 0) + 1
            counters[served] = counters.get(served, 0) + size

    def count(self, name: str, label: str, value: int = 1) -> None:
        """Add to a persistent counter (written with the next flush)."""
        with self._lock:
            k = (name, label)
            self._pending_counters[k] = self._pending_counters.get(k, 0) + value

    def flush(self) -> None:
        """Write pending hits and counters to the index.

        Counters that cannot be written now (index busy or out of service) are kept for the
        next flush, not dropped; pending hits (only the eviction policy's hints) are dropped
        when the index is out of service.
        """
        with self._lock:
            hits, self._pending_hits = self._pending_hits, {}
            counters, self._pending_counters = self._pending_counters, {}
            self._last_flush = time.monotonic()
        if not hits and not counters:
            return
        index = self._index
        if index is None or time.monotonic() < self._busy_until:
            self._keep_pending({} if index is None else hits, counters)
            return
        try:
            settled = index.record(hits, counters)
        except sqlite3.Error as exc:
            self._keep_pending(hits if is_busy(exc) else {}, counters)
            self._fail(exc, "recording hits")
            return
        self._note_settled(settled)
        self._publish_usage()

    def _note_settled(self, digests: set[str]) -> None:
        # Readers test membership without the lock: one set operation is atomic under the GIL.
        now = time.monotonic()
        if now - self._settled_since > _SETTLED_SECONDS or len(self._settled) > _SETTLED_KEPT:
            self._settled.clear()
            self._settled_since = now
        self._settled.update(digests)

    def _keep_pending(self, hits: dict[str, int], counters: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for digest, n in hits.items():
                self._pending_hits[digest] = self._pending_hits.get(digest, 0) + n
            for key, n in counters.items():
                self._pending_counters[key] = self._pending_counters.get(key, 0) + n

    def _flush_periodically(self) -> None:
        while not self._closing.is_set():
            self._flush_wanted.wait(FLUSH_EVERY_SECONDS)
            self._flush_wanted.clear()
            if self._closing.is_set():
                return
            try:
                self._measure_databases()
                self.flush()
            except Exception:  # pragma: no cover - the thread must outlive any surprise
                log.exception("flushing cache counters failed")

    def _measure_databases(self) -> None:
        # Each log counts at its bound at least: it grows by up to that much between two
        # measurements (a second apart), and the room it takes must be there when it does.
        index = self._index
        if index is not None:
            grown = self._log_headroom()
            index.database_room = [self.database_bytes() + grown] + [0] * (len(self._dirs) - 1)

    def _publish_usage(self) -> None:
        index = self._index
        if index is None:
            return
        with contextlib.suppress(sqlite3.Error):
            for u in index.usage():
                CACHE_USAGE_BYTES.labels(f"ssd{u.dir}" if u.dir else "ssd").set(u.used)

    # --- pins and introspection ----------------------------------------------------------------
    def _require_index(self) -> BlockIndex:
        if not self.available or self._index is None:
            raise self._unusable()
        return self._index

    def charge(self, name: str, size: int) -> bool:
        """Charge ``size`` bytes kept outside the block files (a view's files) to ``name``
        (see :meth:`BlockIndex.charge`: unpinned blocks are evicted to make room; False when
        the quota has none). TierUnavailableError when the index cannot take it."""
        index = self._require_index()
        return self._evicting(
            "charging",
            lambda unlink: index.charge(
                name, size, high=self._settings.ssd_high, low=self._settings.ssd_low, unlink=unlink
            ),
        )

    def _evicting(self, doing: str, change: Callable[[Callable[[str, int], None]], bool]) -> bool:
        """Run an index change that may evict (``change(unlink)``), counting its evictions;
        TierUnavailableError when the index fails."""
        try:
            with self._counting_evictions() as unlink:
                done = change(unlink)
        except sqlite3.Error as exc:
            self._fail(exc, doing)
            raise self._unusable() from exc
        self._publish_usage()
        return done

    @contextlib.contextmanager
    def _counting_evictions(self) -> Iterator[Callable[[str, int], None]]:
        """The ``unlink`` an index change that may evict is given (it removes a victim's block
        file), and the count of its evictions once the change is over: also when it failed
        after unlinking some, since those files are gone either way."""
        evicted = 0

        def unlink(victim: str, victim_dir: int) -> None:
            nonlocal evicted
            evicted += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._block_path(victim, victim_dir))

        try:
            yield unlink
        finally:
            if evicted:
                CACHE_EVICTIONS.labels("ssd").inc(evicted)
                self.count("evictions", "ssd", evicted)

    def charges(self) -> dict[str, int]:
        """Bytes charged by name (empty when the tier is unusable)."""
        index = self._index if self.available else None
        return index.charges() if index is not None else {}

    def apply(self, store: StoreSettings, *, for_every_process: bool = False) -> None:
        """Use ``store``'s quotas, watermarks, compression, eviction policy and retry delay from
        now on (the directories must be the ones this tier has); a lowered quota evicts at
        once. ``for_every_process`` also
        records the quotas as the directory's limits (:meth:`BlockIndex.set_limits`), so every
        process on it is held to them: the node agent owns the node's cache directory."""
        dirs = [d.path for d in store.ssd_directories]
        if dirs != self._dirs:
            raise ConfigError(
                f"the SSD directories {dirs} are not the open tier's {self._dirs}: another "
                "cache directory needs its own store"
            )
        old = self._settings
        self._settings = CacheSettings(
            store=store, read=old.read, metadata=old.metadata, health=old.health, qos=old.qos
        )
        self._quotas = [d.quota_bytes for d in store.ssd_directories]
        for i, quota in enumerate(self._quotas):
            CACHE_QUOTA_BYTES.labels(f"ssd{i}" if i else "ssd").set(quota)
        # The index's queues stay as they are: every policy evicts from both.
        self._policy = policy_by_name(store.eviction_policy)
        show_policy("ssd", self._policy)
        index = self._require_index()
        index.quotas = list(self._quotas)
        index.policy = self._policy

        def limit_and_trim(unlink: Callable[[str, int], None]) -> bool:
            if for_every_process:
                index.set_limits(list(self._quotas))
            return index.trim(high=store.ssd_high, low=store.ssd_low, unlink=unlink)

        self._evicting("applying new quotas", limit_and_trim)

    def pin(self, name: str, *, backend: str, prefix: str, reserve_bytes: int) -> None:
        """See :meth:`BlockIndex.pin`; TierUnavailableError when the index cannot take it."""
        index = self._require_index()
        try:
            index.pin(name, backend=backend, prefix=prefix, reserve_bytes=reserve_bytes)
        except sqlite3.Error as exc:
            self._fail(exc, "pinning")
            raise self._unusable() from exc

    def unpin(self, name: str) -> bool:
        """See :meth:`BlockIndex.unpin`; TierUnavailableError when the index cannot take it."""
        index = self._require_index()
        try:
            return index.unpin(name)
        except sqlite3.Error as exc:
            self._fail(exc, "unpinning")
            raise self._unusable() from exc

    def _unusable(self) -> TierUnavailableError:
        reason = self.unavailable_reason or "unknown reason"
        return TierUnavailableError(f"SSD cache tier {self._dirs[0]} is not usable ({reason})")

    def pins(self) -> list[PinRecord]:
        """Every pin in force."""
        return self._require_index().pins()

    def usage(self) -> list[DirUsage]:
        """Per-directory usage (empty when unavailable)."""
        index = self._index if self.available else None
        return index.usage() if index is not None else []

    @property
    def quotas(self) -> list[int]:
        """Per-directory quotas in force, in bytes: this process's, or the directory's limits
        (:meth:`apply` with ``for_every_process``) where they are smaller."""
        index = self._index
        limits: list[int | None] = [None] * len(self._quotas)
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                limits = index.limits()
        return [
            q if lim is None else min(q, lim) for q, lim in zip(self._quotas, limits, strict=True)
        ]

    @property
    def directories(self) -> list[str]:
        """The tier's directories."""
        return list(self._dirs)

    def database_bytes(self) -> int:
        """Bytes the sqlite databases take in the tier's first directory, logs included: the
        index, and the ``databases`` beside it (the metadata cache's, when it is there). Beside
        the quota (which bounds blocks and charges); each log is kept near
        :data:`~edgecache.sqlitefiles.WAL_CHECKPOINT_PAGES` pages."""
        return sum(disk_bytes(path) for path in self._databases)

    def _log_headroom(self) -> int:
        # Per log: one that has grown past its bound does not lend its excess to the other.
        room = 0
        for path in self._databases:
            size = 0
            with contextlib.suppress(OSError):
                size = os.stat(path + "-wal").st_size
            room += max(0, WAL_BOUND_BYTES - size)
        return room

    def counters(self) -> dict[tuple[str, str], int]:
        """Cumulative counters of every process (after flushing this one's)."""
        self.flush()
        index = self._index
        return index.counters() if index is not None else {}

    def check_index(self, *, full: bool = False) -> list[str]:
        """Ask sqlite whether the index is sound (``quick_check``; ``integrity_check`` with
        ``full``). A damaged index is rebuilt from the block files at once (see
        :attr:`rebuilt`). Returns what sqlite reported; empty when the index was sound."""
        index = self._require_index()
        try:
            problems = index.check(full=full)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if not is_corruption(exc):
                raise
            problems = [str(exc)]
        if problems:
            log.warning("cache index check found damage: %s", "; ".join(problems[:3]))
            with self._lock:
                self._index = None
                self._damaged_index = self._index_inode
                self._unavailable_until = 0.0
            with contextlib.suppress(sqlite3.Error):
                index.close()
            self._open()
            self._require_index()
        return problems

    def fix_accounting(self) -> bool:
        """See :meth:`BlockIndex.fix_accounting`."""
        return self._require_index().fix_accounting()

    def verify_blocks(self) -> tuple[int, int]:
        """Read every accounted block whole and verify it; corrupt ones are removed (and
        re-fetched on their next read), rows whose size is not their file's are corrected.
        Returns (corrupt blocks, rows corrected). O(cached bytes)."""
        index = self._require_index()
        corrupt = corrected = 0
        for dir_id in range(len(self._dirs)):
            for digest, raw, size in index.rows(dir_id):
                path = self._block_path(digest, dir_id)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue  # gone: reconcile() drops the row
                try:
                    data = read_block(fd, digest=digest, max_raw_len=raw)
                    if len(data) != raw:
                        raise CorruptBlockError(f"holds {len(data)} bytes, the index says {raw}")
                    stored = os.fstat(fd).st_size
                    if stored != size:
                        index.set_size(digest, stored)
                        corrected += 1
                except CorruptBlockError as exc:
                    corrupt += 1
                    self._corrupt(digest, path, str(exc), _identity(fd))
                finally:
                    os.close(fd)
        return corrupt, corrected

    def reconcile(self) -> dict[str, int]:
        """Remove block files of ours the index does not account for, and rows whose file is
        gone. Files that are not ours (by name and header) are counted and left alone.

        O(blocks): for maintenance (``edgecache stats --verify``, tests), not the read path.
        """
        index = self._require_index()
        removed_files = removed_rows = foreign_files = 0
        for dir_id, path in enumerate(self._dirs):
            known = index.digests(dir_id)
            on_disk: set[str] = set()
            for file_path in self._block_files(path):
                digest = os.path.basename(file_path)
                if digest in known and file_path == self._block_path(digest, dir_id):
                    on_disk.add(digest)
                elif inspect_block_file(file_path) is None:
                    foreign_files += 1
                elif not index.contains(digest):  # not stored since the listing
                    with contextlib.suppress(OSError):
                        os.unlink(file_path)
                        removed_files += 1
            for digest in known - on_disk:
                # A block stored since the walk has its file now: keep it.
                if index.forget(digest, if_missing=self._block_path(digest, dir_id)):
                    removed_rows += 1
        return {
            "removed_files": removed_files,
            "removed_rows": removed_rows,
            "foreign_files": foreign_files,
        }

    def close(self) -> None:
        """Flush and close the index."""
        self._closing.set()
        self._flush_wanted.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        self.flush()
        with self._lock:
            index, self._index = self._index, None
            self._unavailable_until = math.inf
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                index.close()


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
