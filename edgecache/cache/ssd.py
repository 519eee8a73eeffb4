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

Failures of the directory itself (disk full, permissions, deleted underneath) never reach the
reader: the tier reports itself unavailable, the cache serves from the backend, logs a warning,
counts ``edgecache_cache_bypass`` and tries the directory again later.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import uuid

import xxhash

from edgecache.cache._blockfile import (
    HEADER_SIZE,
    CorruptBlockError,
    decode_block,
    decode_block_into,
    encode_block,
    parse_header,
)
from edgecache.cache._index import BlockIndex, DirUsage, PinRecord, _IndexRecreated, open_index
from edgecache.cache._keys import BlockKey
from edgecache.cache.eviction import EvictionPolicy
from edgecache.config import CacheSettings
from edgecache.errors import TierUnavailableError
from edgecache.metrics import (
    CACHE_BYPASS,
    CACHE_CORRUPT_BLOCKS,
    CACHE_EVICTIONS,
    CACHE_QUOTA_BYTES,
    CACHE_USAGE_BYTES,
)

__all__ = ["SSDTier", "TierUnavailableError"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
_RETRY_AFTER_SECONDS = 30.0
_FLUSH_EVERY_SECONDS = 1.0
_FLUSH_EVERY_HITS = 512
_INDEX_CHECK_SECONDS = 2.0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk_full"
    if isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
    ):
        return "permission"
    if isinstance(exc, FileNotFoundError):
        return "directory_missing"
    if isinstance(exc, sqlite3.Error):
        # sqlite reports a full disk as its own error (SQLITE_FULL), not as ENOSPC.
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return "disk_full"
        return "index_error"
    return "io_error"


class SSDTier:
    """Verified block files under quota; shared by every process using the same directories."""

    def __init__(self, settings: CacheSettings, policy: EvictionPolicy) -> None:
        self._settings = settings
        self._policy = policy
        self._dirs = [d.path for d in settings.ssd_directories]
        self._quotas = [d.quota_bytes for d in settings.ssd_directories]
        self._weights = [xxhash.xxh64_intdigest(p.encode()) for p in self._dirs]
        self._index: BlockIndex | None = None
        self._unavailable_until = 0.0
        self._warned: set[str] = set()
        self.unavailable_reason = ""
        """Why the tier last went out of service (the ``edgecache_cache_bypass`` label)."""
        self._lock = threading.Lock()
        self._pending_hits: dict[str, int] = {}
        self._pending_counters: dict[tuple[str, str], int] = {}
        self._last_flush = time.monotonic()
        self._last_index_check = time.monotonic()
        self._index_inode: tuple[int, int] = (0, 0)
        for i, quota in enumerate(self._quotas):
            CACHE_QUOTA_BYTES.labels(f"ssd{i}" if i else "ssd").set(quota)
        self._open()

    # --- availability --------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether the tier can be used now (re-tries a failed directory every 30 s)."""
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

    def _open(self) -> None:
        with self._lock:
            if self._index is not None:
                return
            try:
                for path in self._dirs:
                    os.makedirs(os.path.join(path, "blocks"), exist_ok=True)
                    os.makedirs(os.path.join(path, "tmp"), exist_ok=True)
                    self._clean_tmp(path)
                os.makedirs(self._lock_dir, exist_ok=True)
                index_path = os.path.join(self._dirs[0], INDEX_NAME)

                def drop_block_files() -> None:
                    # A new index (first use, or the old one corrupt, deleted or emptied)
                    # accounts for no file: files left from before would be outside the quota.
                    for path in self._dirs:
                        shutil.rmtree(os.path.join(path, "blocks"), ignore_errors=True)
                        os.makedirs(os.path.join(path, "blocks"), exist_ok=True)

                try:
                    index = open_index(
                        index_path,
                        quotas=self._quotas,
                        policy=self._policy,
                        on_created=drop_block_files,
                    )
                except _IndexRecreated as recreated:
                    index = recreated.index
                self._index = index
                st = os.stat(index_path)
                self._index_inode = (st.st_dev, st.st_ino)
                self._warned.clear()
            except (OSError, sqlite3.Error) as exc:
                self._index = None
                self._unavailable_until = time.monotonic() + _RETRY_AFTER_SECONDS
                self._degrade(exc, "opening")

    def _degrade(self, exc: BaseException, doing: str) -> None:
        reason = self.unavailable_reason = _reason(exc)
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

    def _fail(self, exc: BaseException, doing: str) -> None:
        """Take the tier out of service after an error of the directory itself."""
        self._degrade(exc, doing)
        with self._lock:
            index, self._index = self._index, None
            self._unavailable_until = time.monotonic() + _RETRY_AFTER_SECONDS
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
        # Temp files of writers that died before renaming. Names carry the writer's pid.
        tmp = os.path.join(path, "tmp")
        for name in os.listdir(tmp):
            try:
                pid = int(name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                pid = -1
            if pid > 0 and pid != os.getpid() and _pid_alive(pid):
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
        d = self._dirs[self._dir_for(digest) if dir_id is None else dir_id]
        return os.path.join(d, "blocks", digest[:2], digest)

    # --- reads ---------------------------------------------------------------------------------
    def read(self, key: BlockKey) -> bytes | None:
        """The verified bytes of ``key``'s block, or None on a miss (corruption included)."""
        data = self._read(key, None)
        assert not isinstance(data, list)
        return data

    def read_into(self, key: BlockKey, out: memoryview) -> bool:
        """Like :meth:`read`, but into ``out`` (exactly the block's length); False on a miss."""
        return self._read(key, out) is not None

    def read_pieces(self, key: BlockKey, piece_bytes: int) -> list[bytes] | None:
        """Like :meth:`read`, but the block's bytes as consecutive pieces of ``piece_bytes``
        (the last one shorter), or None on a miss.

        A reader that reads a block in pieces of one size (``f.read(1 MiB)`` of 4 MiB blocks)
        gets them without a copy: each piece is read from the file into its own ``bytes``, and
        all of them are verified (one checksum over the block, computed piece by piece) before
        any is returned, where cutting them out of the whole block costs a second copy.
        """
        pieces = self._read(key, None, piece_bytes)
        assert not isinstance(pieces, bytes)
        return pieces

    def _read(
        self, key: BlockKey, out: memoryview | None, piece_bytes: int = 0
    ) -> bytes | list[bytes] | None:
        # The block's bytes (as pieces of ``piece_bytes`` if given), or b"" once they were put
        # into ``out``; None on a miss.
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
        try:
            header = os.pread(fd, HEADER_SIZE, 0)
            data: bytes | list[bytes]
            if out is not None:
                decode_block_into(fd, header, out, digest=digest)
                data = b""
            elif piece_bytes:
                data = _read_pieces(fd, header, piece_bytes, digest=digest)
            else:
                _, _, stored_len, _ = parse_header(header, digest=digest)
                payload = os.pread(fd, stored_len + 1, HEADER_SIZE)
                data = decode_block(header, payload, digest=digest)
        except CorruptBlockError as exc:
            self._corrupt(digest, path, str(exc))
            return None
        except OSError as exc:
            self._fail(exc, "reading")
            return None
        finally:
            os.close(fd)
        self._note_hit(digest)
        return data

    def _check_missing(self, digest: str, path: str) -> None:
        index = self._index
        if index is None:
            return
        try:
            # A row whose file is still being written (by another thread or process), or was
            # renamed into place since our miss, is no lost block: leave it, or that file
            # would be accounted for by nobody.
            if index.forget(digest, if_missing=path, written=True):
                # Accounted for and written, but gone: deleted underneath. A miss all the
                # same; counted like corruption.
                CACHE_CORRUPT_BLOCKS.inc()
                self.count("corrupt_blocks", "")
        except sqlite3.Error as exc:
            self._fail(exc, "updating the index")

    def _corrupt(self, digest: str, path: str, why: str) -> None:
        log.warning("cache block %s is corrupt (%s); re-fetching", digest, why)
        CACHE_CORRUPT_BLOCKS.inc()
        self.count("corrupt_blocks", "")
        with contextlib.suppress(OSError):
            os.unlink(path)
        index = self._index
        if index is not None:
            try:
                # Unless another reader re-fetched and stored the block in the meantime.
                index.forget(digest, if_missing=path)
            except sqlite3.Error as exc:
                self._fail(exc, "updating the index")

    def contains(self, key: BlockKey) -> bool:
        """Whether the block's file exists (not verified)."""
        return self.available and os.path.exists(self._block_path(key.digest))

    # --- writes --------------------------------------------------------------------------------
    def write(self, key: BlockKey, data: bytes) -> bool:
        """Store a block under quota. False when it was not stored (no room, tier unusable)."""
        index = self._index if self.available else None
        if index is None:
            return False
        digest = key.digest
        blob = encode_block(
            data,
            digest=digest,
            compression=self._settings.compression,
            min_saving=self._settings.compression_min_saving,
        )
        dir_id = self._dir_for(digest)
        final = self._block_path(digest, dir_id)
        token = uuid.uuid4().hex
        evicted = 0

        def unlink(victim: str, victim_dir: int) -> None:
            nonlocal evicted
            evicted += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._block_path(victim, victim_dir))

        try:
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
        if evicted:
            CACHE_EVICTIONS.labels("ssd").inc(evicted)
            self.count("evictions", "ssd", evicted)
        if not reserved:
            return False
        tmp = os.path.join(self._dirs[dir_id], "tmp", f"{digest}.{os.getpid()}.{token}")
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
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                # First block of this prefix: create only the leaf (blocks/ itself must exist).
                with contextlib.suppress(FileExistsError):
                    os.mkdir(os.path.dirname(final))
                os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with contextlib.suppress(sqlite3.Error):
                index.forget(digest, token=token)
            self._fail(exc, "writing a block")
            return False

        def unlink_final() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)

        try:
            stored = index.complete(digest, token, unlink=unlink_final)
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc, "recording a written block")
            return False
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

        index = self._index
        if index is None:
            return
        try:
            # File and row go in one transaction, so a block stored anew by another process
            # in between cannot lose its row (its file would then be accounted by nobody).
            if not index.forget(key.digest, unlink=unlink):
                unlink()
        except (OSError, sqlite3.Error) as exc:
            self._fail(exc, "discarding a block")

    # --- hits, counters and flushing -----------------------------------------------------------
    def _note_hit(self, digest: str) -> None:
        with self._lock:
            self._pending_hits[digest] = self._pending_hits.get(digest, 0) + 1
            due = (
                len(self._pending_hits) >= _FLUSH_EVERY_HITS
                or time.monotonic() - self._last_flush > _FLUSH_EVERY_SECONDS
            )
        if due:
            self.flush()

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
        """Write pending hits and counters to the index."""
        with self._lock:
            hits, self._pending_hits = self._pending_hits, {}
            counters, self._pending_counters = self._pending_counters, {}
            self._last_flush = time.monotonic()
        index = self._index
        if index is None or (not hits and not counters):
            return
        try:
            index.record(hits, counters)
        except sqlite3.Error as exc:
            self._fail(exc, "recording hits")
        self._publish_usage()

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
            raise TierUnavailableError(f"SSD cache tier {self._dirs[0]} is not usable")
        return self._index

    def pin(self, name: str, *, backend: str, prefix: str, reserve_bytes: int) -> None:
        """See :meth:`BlockIndex.pin`."""
        self._require_index().pin(name, backend=backend, prefix=prefix, reserve_bytes=reserve_bytes)

    def unpin(self, name: str) -> bool:
        """See :meth:`BlockIndex.unpin`."""
        return self._require_index().unpin(name)

    def pins(self) -> list[PinRecord]:
        """Every pin in force."""
        return self._require_index().pins()

    def usage(self) -> list[DirUsage]:
        """Per-directory usage (empty when unavailable)."""
        index = self._index if self.available else None
        return index.usage() if index is not None else []

    @property
    def quotas(self) -> list[int]:
        """Per-directory quotas in bytes."""
        return list(self._quotas)

    @property
    def directories(self) -> list[str]:
        """The tier's directories."""
        return list(self._dirs)

    def counters(self) -> dict[tuple[str, str], int]:
        """Cumulative counters of every process (after flushing this one's)."""
        self.flush()
        index = self._index
        return index.counters() if index is not None else {}

    def reconcile(self) -> dict[str, int]:
        """Remove block files the index does not account for, and rows whose file is gone.

        O(blocks): for maintenance (``edgecache stats --verify``, tests), not the read path.
        """
        index = self._require_index()
        removed_files = removed_rows = 0
        for dir_id, path in enumerate(self._dirs):
            known = index.digests(dir_id)
            on_disk: set[str] = set()
            for root, _dirs, files in os.walk(os.path.join(path, "blocks")):
                for name in files:
                    if name in known:
                        on_disk.add(name)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(root, name))
                            removed_files += 1
            for digest in known - on_disk:
                # A block stored since the walk has its file now: keep it.
                if index.forget(digest, if_missing=self._block_path(digest, dir_id)):
                    removed_rows += 1
        return {"removed_files": removed_files, "removed_rows": removed_rows}

    def close(self) -> None:
        """Flush and close the index."""
        self.flush()
        with self._lock:
            index, self._index = self._index, None
            self._unavailable_until = math.inf
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                index.close()


def _read_pieces(fd: int, header: bytes, piece_bytes: int, *, digest: str) -> list[bytes]:
    """The verified raw bytes of the block open as ``fd`` in pieces of ``piece_bytes``."""
    compressed, raw_len, stored_len, checksum = parse_header(header, digest=digest)
    if compressed:
        data = decode_block(header, os.pread(fd, stored_len + 1, HEADER_SIZE), digest=digest)
        return [data[o : o + piece_bytes] for o in range(0, len(data), piece_bytes)] or [b""]
    if raw_len != stored_len:
        raise CorruptBlockError(f"raw block of {raw_len} bytes stored as {stored_len}")
    hasher = xxhash.xxh3_64()
    pieces = []
    for offset in range(0, stored_len, piece_bytes):
        want = min(piece_bytes, stored_len - offset)
        piece = os.pread(fd, want, HEADER_SIZE + offset)
        if len(piece) != want:
            raise CorruptBlockError(f"payload ends before the {stored_len} bytes the header says")
        hasher.update(piece)
        pieces.append(piece)
    if os.pread(fd, 1, HEADER_SIZE + stored_len):
        raise CorruptBlockError(f"payload is longer than the {stored_len} bytes the header says")
    if hasher.intdigest() != checksum:
        raise CorruptBlockError("checksum mismatch")
    return pieces or [b""]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
