"""The SSD tier's index: a sqlite database (WAL) shared by every process using one cache dir.

The SSD tier (:mod:`edgecache.cache.ssd`) finds a block by its file name alone (the key digest),
so lookups never touch this index. The index is the bookkeeping around the files: what each
directory holds against its quota, the eviction policy's queues and frequencies, pins, the ghost
list, and cumulative counters that ``edgecache stats`` shows across processes.

Crash safety comes from ordering, not from fsync: a block's row is written (and space reserved)
*before* its file appears, and evicted files are unlinked *before* their rows are deleted. A
process killed at any point therefore leaves at worst a row without a file, which a read detects
as a missing block (counted, re-fetched); never a file the quota does not account for. sqlite in
WAL mode makes each transaction atomic under SIGKILL, and ``BEGIN IMMEDIATE`` serialises the
processes that change the index.

A row reserved for a file still being written carries the writer's token in ``writing`` until the
writer puts the file in place (:meth:`BlockIndex.complete`: the rename runs inside the
transaction that clears the mark). A reader that misses such a block leaves the row alone (the
file is on its way). A writer whose row was evicted or dropped meanwhile never puts its file in
place, and no other process can evict the row between the rename and the mark: no file ever
outlives its row, not even for a moment, and not when the writer is killed after the rename.

Bytes stored outside the block files can be **charged** to a directory (``charges``: the node
agent's views, whose files are the node's copy of a dataset): a charge counts as pinned usage
in every process's quota check, so watermarks evict unpinned blocks to make room for it and a
charge that cannot fit is refused. A directory can carry a **limit** (``limits``), the quota its
owner (the agent, from the runtime) gives it: every process on the directory is held to the
smaller of its own quota and the limit, so one quota holds for all of them. Both kinds of row
carry a checksum like block rows; a damaged one is dropped.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import xxhash

from edgecache.cache.eviction import EvictionPolicy, PolicyEntry
from edgecache.errors import PinError
from edgecache.sqlitefiles import (
    bound_wal,
    exclusive_lock,
    file_identity,
    is_damage,
    sqlite_code,
)

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "SCHEMA_VERSION",
    "BlockIndex",
    "DirUsage",
    "FoundBlock",
    "PinRecord",
    "RebuildReport",
    "file_identity",
    "is_busy",
    "is_corruption",
    "open_index",
    "sqlite_code",
]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks(
    digest  TEXT PRIMARY KEY,
    dir     INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    raw     INTEGER NOT NULL,
    queue   INTEGER NOT NULL,
    freq    INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    pinned  INTEGER NOT NULL,
    backend TEXT NOT NULL,
    path    TEXT NOT NULL,
    writing TEXT NOT NULL DEFAULT '',
    check_sum TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_order ON blocks(dir, pinned, queue, seq);
CREATE INDEX IF NOT EXISTS blocks_path ON blocks(backend, path);
CREATE TABLE IF NOT EXISTS dirs(
    dir    INTEGER PRIMARY KEY,
    used   INTEGER NOT NULL DEFAULT 0,
    pinned INTEGER NOT NULL DEFAULT 0,
    small  INTEGER NOT NULL DEFAULT 0,
    main   INTEGER NOT NULL DEFAULT 0,
    blocks INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ghost(digest TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ghost_seq ON ghost(seq);
CREATE TABLE IF NOT EXISTS pins(
    name TEXT PRIMARY KEY, backend TEXT NOT NULL, prefix TEXT NOT NULL,
    reserved INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters(
    name TEXT NOT NULL, label TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY(name, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('seq', 0), ('pins_version', 0), ('schema', 2);
CREATE TABLE IF NOT EXISTS charges(
    name TEXT NOT NULL, dir INTEGER NOT NULL, bytes INTEGER NOT NULL,
    check_sum TEXT NOT NULL, PRIMARY KEY(name, dir)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limits(
    dir INTEGER PRIMARY KEY, quota INTEGER NOT NULL, check_sum TEXT NOT NULL
);
"""

SCHEMA_VERSION = 2
"""1: blocks, dirs, ghost, pins, counters, meta; 2: ``charges`` and ``limits`` added (an index of
version 1 is upgraded in place when it is opened: the tables are created, nothing is lost)."""
_ADDED_IN_2 = frozenset({"charges", "limits"})

_GHOST_MIN = 4096
_QUEUE_COLUMN = {0: "small", 1: "main"}
_ROWS_PER_QUERY = 500
"""Rows looked up by one ``IN (...)`` query: under the 999 parameters older sqlite builds allow."""
_VERIFIED_ROWS_KEPT = 262144
"""Block rows an index remembers having verified on a hit (then it starts afresh)."""

#: The columns of a block row that its checksum covers, then the checksum. ``freq`` and ``seq``
#: are left out: they change on every hit, and any integer there is a legal policy hint.
_ROW = "digest, dir, size, raw, queue, pinned, backend, path, writing, check_sum"


def row_sum(*fields: object) -> str:
    """xxh3-64 (hex) of a block row's covered fields, types included (``repr``): a flipped bit
    that turns a number into text, or one digit into another, no longer matches."""
    return xxhash.xxh3_64_hexdigest("\0".join(map(repr, fields)).encode("utf-8", "surrogatepass"))


def _with_sum(*fields: object) -> tuple[object, ...]:
    """A row's covered fields followed by their checksum (``_ROW``'s columns)."""
    return (*fields, row_sum(*fields))


def _charge_holds(row: tuple[Any, ...], dirs: int) -> bool:
    """Whether a ``charges`` row (name, dir, bytes, check_sum) is intact and in range."""
    name, dir_id, size, stored = row
    return (
        isinstance(name, str)
        and isinstance(dir_id, int)
        and isinstance(size, int)
        and 0 <= dir_id < dirs
        and size >= 0
        and stored == row_sum(name, dir_id, size)
    )


def _limit_holds(row: tuple[Any, ...]) -> bool:
    """Whether a ``limits`` row (dir, quota, check_sum) is intact."""
    dir_id, quota, stored = row
    return (
        isinstance(dir_id, int)
        and isinstance(quota, int)
        and quota >= 0
        and stored == row_sum(dir_id, quota)
    )


def _shares(size: int, quotas: list[int]) -> list[int]:
    """``size`` bytes spread over directories in proportion to their quotas (the remainder
    to the first), as blocks are placed by weight."""
    total = sum(quotas)
    if total <= 0:
        return [size] + [0] * (len(quotas) - 1)
    shares = [size * q // total for q in quotas]
    shares[0] += size - sum(shares)
    return shares


@dataclass(frozen=True)
class _Block:
    """A block row whose checksum and value ranges were verified."""

    digest: str
    dir: int
    size: int
    raw: int
    queue: int
    pinned: int
    backend: str
    path: str
    writing: str

    def fields(self) -> tuple[object, ...]:
        return (
            self.digest,
            self.dir,
            self.size,
            self.raw,
            self.queue,
            self.pinned,
            self.backend,
            self.path,
            self.writing,
        )

    def with_(self, **changes: Any) -> tuple[object, ...]:
        """The covered fields with ``changes``, and their new checksum, for an UPDATE."""
        values = {**self.__dict__, **changes}
        fields = tuple(values[name] for name in self.__dataclass_fields__)
        return (*fields, row_sum(*fields))


@dataclass(frozen=True)
class DirUsage:
    """Bytes and blocks one SSD directory holds (stored sizes, after compression)."""

    dir: int
    used: int
    pinned: int
    blocks: int
    charged: int = 0
    """Bytes charged to the directory from outside its block files (the agent's views)."""


@dataclass(frozen=True)
class PinRecord:
    """A pin: blocks of ``backend`` whose path starts with ``prefix`` are never evicted."""

    name: str
    backend: str
    prefix: str
    reserved: int


def _matches(pins: Iterable[PinRecord], backend: str, path: str) -> bool:
    return any(p.backend == backend and path.startswith(p.prefix) for p in pins)


class _SQLPolicyStore:
    """:class:`~edgecache.cache.eviction.PolicyStore` over the index, for one directory.

    Used inside an open write transaction; rows it removes are handed to ``on_remove`` (which
    unlinks the file) before the row goes, so a crash never leaves an unaccounted file.
    """

    def __init__(
        self,
        index: BlockIndex,
        dir_id: int,
        on_remove: Callable[[str, int], None],
    ) -> None:
        self._index = index
        self._db = index._db
        self._dir = dir_id
        self._on_remove = on_remove

    def head(self, queue: int) -> PolicyEntry | None:
        while True:
            row = self._db.execute(
                f"SELECT {_ROW}, freq FROM blocks WHERE dir=? AND pinned=0 AND queue=? "
                "ORDER BY seq LIMIT 1",
                (self._dir, queue),
            ).fetchone()
            if row is None:
                return None
            block = self._index._verified(row[:-1])
            if block is None:
                continue  # dropped: the next one is the head
            freq = row[-1] if isinstance(row[-1], int) else 0
            return PolicyEntry(block.digest, block.size, queue, freq)

    def requeue(self, key: str, queue: int, freq: int) -> None:
        block = self._index._fetch(key)
        if block is None:
            return
        self._db.execute(
            "UPDATE blocks SET queue=?, freq=?, seq=?, check_sum=? WHERE digest=?",
            (queue, freq, self._index._next_seq(), block.with_(queue=queue)[-1], key),
        )
        if block.queue != queue:
            self._db.execute(
                f"UPDATE dirs SET {_QUEUE_COLUMN[block.queue]}={_QUEUE_COLUMN[block.queue]}-?, "
                f"{_QUEUE_COLUMN[queue]}={_QUEUE_COLUMN[queue]}+? WHERE dir=?",
                (block.size, block.size, self._dir),
            )

    def remove(self, key: str) -> None:
        block = self._index._fetch(key)
        if block is not None:
            self._on_remove(key, block.dir)
            self._index._delete_row(key)

    def queue_bytes(self, queue: int) -> int:
        value: int = self._db.execute(
            f"SELECT {_QUEUE_COLUMN[queue]} FROM dirs WHERE dir=?", (self._dir,)
        ).fetchone()[0]
        return value

    def total_bytes(self) -> int:
        value: int = self._db.execute("SELECT used FROM dirs WHERE dir=?", (self._dir,)).fetchone()[
            0
        ]
        return value

    def ghost_add(self, key: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO ghost VALUES (?, ?)", (key, self._index._next_seq())
        )

    def ghost_contains(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM ghost WHERE digest=?", (key,)).fetchone() is not None


class BlockIndex:
    """Accounting, policy state, pins and counters of one SSD tier. Thread-safe."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        quotas: list[int],
        policy: EvictionPolicy,
    ):
        self._db = db
        self._lock = threading.RLock()
        self.quotas = quotas
        self.policy = policy
        self.database_room = [0] * len(quotas)
        """Bytes each directory keeps for the sqlite databases: what they take, and what their
        logs may still grow to before the SSD tier measures them again. Counted in the
        directory's quota from :data:`DATABASES_COUNTED_FROM_BYTES` on."""
        self._seq: int | None = None
        self._pins: list[PinRecord] = []
        self._pins_version = -1
        self._reported_damage: set[str] = set()
        self._verified_rows: set[str] = set()
        """Digests whose rows a hit verified whole (later hits read only queue and frequency)."""

    # --- transactions --------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._seq = self._db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]
                yield
                self._db.execute("UPDATE meta SET value=? WHERE key='seq'", (self._seq,))
                self._db.execute("COMMIT")
            except BaseException:
                # sqlite itself rolls back on some errors (SQLITE_FULL among them); a second
                # ROLLBACK would then raise and hide the error that matters.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._seq = None

    def _next_seq(self) -> int:
        assert self._seq is not None, "sequence numbers are only handed out in a transaction"
        self._seq += 1
        return self._seq

    # --- rows, verified ------------------------------------------------------------------------
    def _verified(self, row: tuple[Any, ...]) -> _Block | None:
        """The block a row (``_ROW``'s columns) describes if its checksum and value ranges
        hold; otherwise the row is dropped (inside the caller's write transaction) and None."""
        *fields, stored = row
        digest, dir_id, size, raw, queue, pinned = fields[:6]
        if (
            isinstance(stored, str)
            and stored == row_sum(*fields)
            and all(isinstance(v, int) for v in (dir_id, size, raw, queue, pinned))
            and all(isinstance(v, str) for v in (digest, *fields[6:]))
            and 0 <= dir_id < len(self.quotas)
            and queue in _QUEUE_COLUMN
            and pinned in (0, 1)
            and size >= 0
            and raw >= 0
        ):
            return _Block(*fields)
        self._drop_damaged(row[0])
        return None

    def _fetch(self, digest: str) -> _Block | None:
        """The verified row of ``digest`` (None: no row, or a damaged one, now dropped)."""
        row = self._db.execute(f"SELECT {_ROW} FROM blocks WHERE digest=?", (digest,)).fetchone()
        return None if row is None else self._verified(row)

    def _drop_damaged(self, digest: Any) -> None:
        """Drop a row whose checksum fails (a flipped bit, a stray write): its numbers cannot
        be trusted, so the running sums are recomputed from the rows left. Its block file, if
        any, verifies itself on every read; it is accounted for again when the block is stored
        again, and ``stats --verify`` removes it meanwhile."""
        self._db.execute("DELETE FROM blocks WHERE digest=?", (digest,))
        self._fix_sums()
        name = repr(digest)[:80]
        if name not in self._reported_damage:
            self._reported_damage.add(name)
            log.warning(
                "cache index: dropped the damaged row of block %s (its checksum or values do "
                "not hold); the block is read from its self-checking file or fetched again",
                name,
            )

    def _delete_row(self, digest: str) -> None:
        block = self._fetch(digest)
        if block is None:
            return
        self._db.execute("DELETE FROM blocks WHERE digest=?", (digest,))
        self._db.execute(
            f"UPDATE dirs SET used=used-?, pinned=pinned-?, blocks=blocks-1, "
            f"{_QUEUE_COLUMN[block.queue]}={_QUEUE_COLUMN[block.queue]}-? WHERE dir=?",
            (block.size, block.size if block.pinned else 0, block.size, block.dir),
        )

    def _refresh_pins(self) -> None:
        version = self._db.execute("SELECT value FROM meta WHERE key='pins_version'").fetchone()[0]
        if version != self._pins_version:
            self._pins = [
                PinRecord(*row)
                for row in self._db.execute("SELECT name, backend, prefix, reserved FROM pins")
            ]
            self._pins_version = version

    # --- block life cycle ----------------------------------------------------------------------
    def reserve(
        self,
        digest: str,
        *,
        dir_id: int,
        size: int,
        raw: int,
        backend: str,
        path: str,
        high: float,
        low: float,
        unlink: Callable[[str, int], None],
        token: str = "",
    ) -> bool:
        """Account for a block about to be written to ``dir_id``, evicting to make room.

        Returns False when the block cannot fit even after evicting every unpinned block: the
        caller then serves the data without caching it. ``token`` marks the row as being written
        until :meth:`complete` is called with it.
        """
        with self._write():
            self._refresh_pins()
            found = self._fetch(digest)
            old = None if found is None else (found.dir,)
            self._delete_row(digest)
            charged = self._charged(dir_id)
            if not self._make_room(dir_id, size, charged, high=high, low=low, unlink=unlink):
                return self._refuse(digest, old, unlink)
            is_pinned = _matches(self._pins, backend, path)
            queue, freq = self.policy.admit(_SQLPolicyStore(self, dir_id, unlink), digest)
            self._db.execute("DELETE FROM ghost WHERE digest=?", (digest,))
            self._db.execute(
                f"INSERT INTO blocks({_ROW}, freq, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    *_with_sum(
                        digest, dir_id, size, raw, queue, int(is_pinned), backend, path, token
                    ),
                    freq,
                    self._next_seq(),
                ),
            )
            self._db.execute(
                f"UPDATE dirs SET used=used+?, pinned=pinned+?, blocks=blocks+1, "
                f"{_QUEUE_COLUMN[queue]}={_QUEUE_COLUMN[queue]}+? WHERE dir=?",
                (size, size if is_pinned else 0, size, dir_id),
            )
            return True

    def _make_room(
        self,
        dir_id: int,
        size: int,
        charged: int,
        *,
        high: float,
        low: float,
        unlink: Callable[[str, int], None],
    ) -> bool:
        """Whether ``size`` more bytes fit in ``dir_id`` beside its blocks and ``charged``
        bytes (both count), after evicting unpinned blocks to the low watermark when the high
        one would be passed. Inside a write transaction."""
        quota = self._quota(dir_id)
        charged += self._counted_databases(dir_id, quota)
        used, pinned = self._db.execute(
            "SELECT used, pinned FROM dirs WHERE dir=?", (dir_id,)
        ).fetchone()
        if pinned + charged + size > quota:
            return False
        if used + charged + size > high * quota:
            target = min(low * quota, quota - size)
            store = _SQLPolicyStore(self, dir_id, unlink)
            self.policy.evict(store, int(used + charged + size - target))
            self._trim_ghosts(dir_id)
            used = self._db.execute("SELECT used FROM dirs WHERE dir=?", (dir_id,)).fetchone()[0]
            if used + charged + size > quota:
                return False
        return True

    @staticmethod
    def _refuse(digest: str, old: tuple[int] | None, unlink: Callable[[str, int], None]) -> bool:
        # A copy stored before (maybe smaller: other compression) lost its row above; its file
        # goes too, or it would stay on disk outside the quota.
        if old is not None:
            unlink(digest, old[0])
        return False

    def _trim_ghosts(self, dir_id: int) -> None:
        limit = max(
            _GHOST_MIN,
            self._db.execute("SELECT blocks FROM dirs WHERE dir=?", (dir_id,)).fetchone()[0],
        )
        count = self._db.execute("SELECT count(*) FROM ghost").fetchone()[0]
        if count > limit:
            self._db.execute(
                "DELETE FROM ghost WHERE digest IN (SELECT digest FROM ghost ORDER BY seq LIMIT ?)",
                (count - limit,),
            )

    def complete(self, digest: str, token: str, *, place: Callable[[], None]) -> bool:
        """Put the file reserved with ``token`` in place and clear the row's writing mark.

        ``place`` (the writer's rename) runs inside the write transaction, and only while the
        row is still this writer's: no other process can evict the row between the rename and
        the mark, so the file is never on disk without a row that accounts for it. False if
        the row went away meanwhile (evicted, invalidated, or taken as missing) or another
        writer reserved the block again: ``place`` is then not called, and the caller removes
        its temporary file. An error from ``place`` rolls the transaction back and is raised.
        """
        with self._write():
            block = self._fetch(digest)
            if block is None or block.writing != token:
                return False
            place()
            self._db.execute(
                "UPDATE blocks SET writing='', check_sum=? WHERE digest=?",
                (block.with_(writing="")[-1], digest),
            )
            # Verified just now (by _fetch) and written by us: its first hit need not verify
            # it again (8 µs of the flusher's CPU per block a process reads back, of 19).
            # Bounded here too: a prefetch stores blocks without a hit to clear the set.
            self._verified_set().add(digest)
            return True

    def forget(
        self,
        digest: str,
        *,
        token: str | None = None,
        if_missing: str = "",
        written: bool = False,
        unlink: Callable[[], None] | None = None,
    ) -> bool:
        """Drop a block's row (its file is gone, corrupt or unwanted). True if there was one.

        The checks run inside the write transaction, which no other writer can reserve in, so
        they cannot go stale: ``token``, only the row that write reserved; ``if_missing``, only
        if this path does not exist (the file may have been renamed into place since the
        caller's miss); ``written``, only a row whose file was confirmed written (a missing
        file of a write in progress is no lost block). ``unlink`` removes the file first, in
        the same transaction: a writer cannot store the block anew between the two.
        """
        with self._write():
            block = self._fetch(digest)
            if block is None or (token is not None and block.writing != token):
                return False
            if (written and block.writing) or (if_missing and os.path.exists(if_missing)):
                return False
            if unlink is not None:
                unlink()
            self._delete_row(digest)
            return True

    def contains(self, digest: str) -> bool:
        """Whether the index accounts for ``digest``."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM blocks WHERE digest=?", (digest,)).fetchone()
            return row is not None

    def record(self, hits: dict[str, int], counters: dict[tuple[str, str], int]) -> set[str]:
        """Apply a batch of block hits (for the policy) and counter increments, in one go.
        Returns the digests whose rows a further hit would not change (the policy's
        :meth:`~edgecache.cache.eviction.EvictionPolicy.hit_is_noop`)."""
        settled: set[str] = set()
        if not hits and not counters:
            return settled
        with self._write():
            # A warm small-file loop records a hit per file: rows are looked up many at a
            # time (one row at a time, each verified, cost ~14 µs of CPU per hit).
            digests = list(hits)
            for start in range(0, len(digests), _ROWS_PER_QUERY):
                self._record_hits(digests[start : start + _ROWS_PER_QUERY], hits, settled)
            self._db.executemany(
                "INSERT INTO counters VALUES (?, ?, ?) "
                "ON CONFLICT(name, label) DO UPDATE SET value=value+excluded.value",
                [(name, label, value) for (name, label), value in counters.items()],
            )
        return settled

    def _verified_set(self) -> set[str]:
        """The digests whose rows this index has verified, all forgotten at once past
        :data:`_VERIFIED_ROWS_KEPT` (a bound on memory: a forgotten row is verified again)."""
        if len(self._verified_rows) > _VERIFIED_ROWS_KEPT:
            self._verified_rows.clear()
        return self._verified_rows

    def _record_hits(self, digests: list[str], hits: dict[str, int], settled: set[str]) -> None:
        verified = self._verified_set()
        # A row is verified whole (its checksum) the first time this index records a hit of
        # it, so a damaged one is dropped before a hit touches it. After that only what a hit
        # reads and changes is read (queue and frequency, which the checksum does not cover):
        # reading and hashing whole rows on every flush cost ~10-20 us of CPU per hit, in a
        # thread that competes with the readers for the GIL. Damage done to a row later is
        # met by the walks that trust its other fields (eviction, the sums, stats --verify).
        found: dict[str, tuple[Any, Any]] = {}
        new = [d for d in digests if d not in verified]
        if new:
            marks = ",".join("?" * len(new))
            for row in self._db.execute(
                f"SELECT {_ROW}, freq FROM blocks WHERE digest IN ({marks})", new
            ).fetchall():
                fields, freq = row[:-1], row[-1]
                if self._verified(fields) is not None:
                    verified.add(row[0])
                    found[row[0]] = (fields[4], freq)
        known = [d for d in digests if d in verified and d not in found]
        if known:
            marks = ",".join("?" * len(known))
            for digest, queue, freq in self._db.execute(
                f"SELECT digest, queue, freq FROM blocks WHERE digest IN ({marks})", known
            ):
                found[digest] = (queue, freq)
        policy = self.policy
        moved: list[tuple[int, int, str]] = []
        changed: list[tuple[int, str]] = []
        for digest in digests:  # in the order of the hits, which LRU's seq numbers keep
            row = found.get(digest)
            if row is None:
                continue
            queue, freq = row
            known_freq = freq if isinstance(freq, int) else 0
            move, new_freq = policy.on_hit(queue, known_freq, hits[digest])
            if move:
                moved.append((new_freq, self._next_seq(), digest))
            elif new_freq != freq:
                changed.append((new_freq, digest))
            if not move and policy.hit_is_noop(queue, new_freq):
                settled.add(digest)
        if moved:
            self._db.executemany("UPDATE blocks SET freq=?, seq=? WHERE digest=?", moved)
        if changed:
            self._db.executemany("UPDATE blocks SET freq=? WHERE digest=?", changed)

    # --- pins ----------------------------------------------------------------------------------
    def pin(self, name: str, *, backend: str, prefix: str, reserve_bytes: int) -> None:
        """Pin blocks under ``prefix``; refuse (PinError) when ``reserve_bytes`` cannot fit."""
        with self._write():
            quotas = [self._quota(d) for d in range(len(self.quotas))]
            total_quota = sum(quotas)
            self._refresh_pins()
            others = [p for p in self._pins if p.name != name]
            other_reserved = sum(p.reserved for p in others)
            charged = sum(
                self._charged(d) + self._counted_databases(d, q) for d, q in enumerate(quotas)
            )
            if other_reserved + charged + reserve_bytes > total_quota:
                raise PinError(
                    f"cannot pin {name!r}: it needs {reserve_bytes} bytes but only "
                    f"{max(total_quota - other_reserved - charged, 0)} of the {total_quota}-byte "
                    f"SSD quota are not reserved by other pins "
                    f"({', '.join(p.name for p in others) or '-'}), charged to views or taken "
                    f"by the cache's databases"
                )
            self._db.execute(
                "INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?)",
                (name, backend, prefix, reserve_bytes, time.time()),
            )
            self._set_pinned(backend, prefix, True)
            self._bump_pins_version()

    def unpin(self, name: str) -> bool:
        """Remove a pin; blocks no other pin covers become evictable. True if it existed."""
        with self._write():
            row = self._db.execute(
                "SELECT backend, prefix FROM pins WHERE name=?", (name,)
            ).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM pins WHERE name=?", (name,))
            self._set_pinned(row[0], row[1], False)
            for backend, prefix in self._db.execute("SELECT backend, prefix FROM pins").fetchall():
                self._set_pinned(backend, prefix, True)
            self._bump_pins_version()
            return True

    def pins(self) -> list[PinRecord]:
        """Every pin in force."""
        with self._lock:
            return [
                PinRecord(*row)
                for row in self._db.execute("SELECT name, backend, prefix, reserved FROM pins")
            ]

    def _bump_pins_version(self) -> None:
        self._db.execute("UPDATE meta SET value=value+1 WHERE key='pins_version'")

    def _set_pinned(self, backend: str, prefix: str, pinned: bool) -> None:
        # Prefix match on the (backend, path) index: path >= prefix AND path < prefix + U+10FFFF.
        upper = prefix + "\U0010ffff"
        rows = self._db.execute(
            f"SELECT {_ROW} FROM blocks WHERE backend=? AND path>=? AND path<? AND pinned=?",
            (backend, prefix, upper, int(not pinned)),
        ).fetchall()
        sign = 1 if pinned else -1
        for row in rows:
            block = self._verified(row)
            if block is None:
                continue
            self._db.execute(
                "UPDATE blocks SET pinned=?, check_sum=? WHERE digest=?",
                (int(pinned), block.with_(pinned=int(pinned))[-1], block.digest),
            )
            self._db.execute(
                "UPDATE dirs SET pinned=pinned+? WHERE dir=?", (sign * block.size, block.dir)
            )

    # --- charges and limits --------------------------------------------------------------------
    def _quota(self, dir_id: int) -> int:
        """The quota in force for ``dir_id``: this opener's, or the directory's limit if
        smaller. Inside a write transaction (a damaged limit row is dropped)."""
        row = self._db.execute(
            "SELECT dir, quota, check_sum FROM limits WHERE dir=?", (dir_id,)
        ).fetchone()
        own = self.quotas[dir_id]
        if row is None:
            return own
        if _limit_holds(row):
            return min(own, int(row[1]))
        self._db.execute("DELETE FROM limits WHERE dir=?", (dir_id,))
        log.warning("cache index: dropped the damaged limit of directory %d", dir_id)
        return own

    def _charge_rows(self, *, drop: bool) -> list[tuple[str, int, int]]:
        """(name, dir, bytes) of every charge whose checksum and values hold; damaged ones are
        dropped when ``drop`` (inside a write transaction), skipped otherwise."""
        kept = []
        for row in self._db.execute("SELECT name, dir, bytes, check_sum FROM charges").fetchall():
            if _charge_holds(row, len(self.quotas)):
                kept.append((str(row[0]), int(row[1]), int(row[2])))
            elif drop:
                self._db.execute(
                    "DELETE FROM charges WHERE name IS ? AND dir IS ?", (row[0], row[1])
                )
                log.warning("cache index: dropped the damaged charge %r", repr(row[0])[:80])
        return kept

    def _counted_databases(self, dir_id: int, quota: int) -> int:
        """The room kept for the databases in ``dir_id`` (:attr:`database_room`) if its
        ``quota`` counts them (:data:`DATABASES_COUNTED_FROM_BYTES`)."""
        return self.database_room[dir_id] if quota >= DATABASES_COUNTED_FROM_BYTES else 0

    def _charged(self, dir_id: int, *, excluding: str | None = None) -> int:
        return sum(
            size
            for name, d, size in self._charge_rows(drop=True)
            if d == dir_id and name != excluding
        )

    def charge(
        self,
        name: str,
        size: int,
        *,
        high: float,
        low: float,
        unlink: Callable[[str, int], None],
    ) -> bool:
        """Charge ``size`` bytes stored outside the block files to ``name`` (replacing what it
        was charged before; 0 removes the charge). They count as pinned usage: growing a charge
        evicts unpinned blocks (to ``low`` once ``high`` would be passed; ``unlink`` removes
        their files) and is refused (False, the old charge kept) when pinned blocks and the
        other charges leave no room. Spread over the directories by their quotas."""
        if size < 0:
            raise ValueError(f"a charge cannot be negative ({size})")
        with self._write():
            held = {d: b for n, d, b in self._charge_rows(drop=True) if n == name}
            shares = _shares(size, [self._quota(d) for d in range(len(self.quotas))])
            for dir_id, share in enumerate(shares):
                if share <= held.get(dir_id, 0):
                    continue  # shrinking always fits
                others = self._charged(dir_id, excluding=name)
                if not self._make_room(dir_id, share, others, high=high, low=low, unlink=unlink):
                    return False
            self._db.execute("DELETE FROM charges WHERE name=?", (name,))
            self._db.executemany(
                "INSERT INTO charges VALUES (?, ?, ?, ?)",
                [_with_sum(name, d, share) for d, share in enumerate(shares) if share],
            )
            return True

    def trim(self, *, high: float, low: float, unlink: Callable[[str, int], None]) -> bool:
        """Evict unpinned blocks of every directory whose blocks and charges pass ``high`` of
        its quota, down to ``low`` (after a quota was lowered). True if each is then within
        its quota."""
        with self._write():
            fits = [
                self._make_room(d, 0, self._charged(d), high=high, low=low, unlink=unlink)
                for d in range(len(self.quotas))
            ]
            return all(fits)

    def charges(self) -> dict[str, int]:
        """Bytes charged, by name (summed over directories)."""
        with self._lock:
            totals: dict[str, int] = {}
            for name, _dir, size in self._charge_rows(drop=False):
                totals[name] = totals.get(name, 0) + size
            return totals

    def set_limits(self, quotas: list[int] | None) -> None:
        """Hold every process on this directory to ``quotas`` (bytes per directory; None
        lifts the limit): how the node's owner of the directory makes its quota the one quota
        of all its users. Takes effect at each process's next reservation."""
        if quotas is not None and len(quotas) != len(self.quotas):
            raise ValueError(f"{len(quotas)} limits for {len(self.quotas)} directories")
        with self._write():
            self._db.execute("DELETE FROM limits")
            if quotas is not None:
                self._db.executemany(
                    "INSERT INTO limits VALUES (?, ?, ?)",
                    [_with_sum(d, max(int(q), 0)) for d, q in enumerate(quotas)],
                )

    def limits(self) -> list[int | None]:
        """The directory limits set by :meth:`set_limits` (None where there is none)."""
        with self._lock:
            found = {
                int(row[0]): int(row[1])
                for row in self._db.execute("SELECT dir, quota, check_sum FROM limits")
                if _limit_holds(row)
            }
        return [found.get(d) for d in range(len(self.quotas))]

    # --- reading -------------------------------------------------------------------------------
    def usage(self) -> list[DirUsage]:
        """Per-directory usage."""
        with self._lock:
            charged: dict[int, int] = {}
            for _name, dir_id, size in self._charge_rows(drop=False):
                charged[dir_id] = charged.get(dir_id, 0) + size
            return [
                DirUsage(dir_id, used, pinned, blocks, charged.get(dir_id, 0))
                for dir_id, used, pinned, blocks in self._db.execute(
                    "SELECT dir, used, pinned, blocks FROM dirs ORDER BY dir"
                )
            ]

    def counters(self) -> dict[tuple[str, str], int]:
        """Cumulative counters of every process that used this cache directory."""
        with self._lock:
            return {
                (name, label): value
                for name, label, value in self._db.execute("SELECT * FROM counters")
            }

    def digests(self, dir_id: int) -> set[str]:
        """All digests accounted to ``dir_id`` (for reconciliation; O(blocks))."""
        with self._lock:
            return {
                row[0]
                for row in self._db.execute("SELECT digest FROM blocks WHERE dir=?", (dir_id,))
            }

    def rows(self, dir_id: int) -> list[tuple[str, int, int]]:
        """(digest, raw length, size) of every block accounted to ``dir_id`` (verification)."""
        with self._write():
            rows = self._db.execute(f"SELECT {_ROW} FROM blocks WHERE dir=?", (dir_id,)).fetchall()
            blocks = [self._verified(row) for row in rows]
            return [(b.digest, b.raw, b.size) for b in blocks if b is not None]

    def set_size(self, digest: str, size: int) -> None:
        """Correct a row's stored size to its file's (the running sums follow with
        :meth:`fix_accounting`)."""
        with self._write():
            block = self._fetch(digest)
            if block is not None:
                self._db.execute(
                    "UPDATE blocks SET size=?, check_sum=? WHERE digest=?",
                    (size, block.with_(size=size)[-1], digest),
                )

    def check(self, *, full: bool) -> list[str]:
        """What sqlite finds wrong with the database (``integrity_check`` with ``full``, else
        the faster ``quick_check``); empty when it is sound. Raises sqlite3.DatabaseError when
        the damage keeps sqlite from checking at all."""
        pragma = "integrity_check" if full else "quick_check"
        with self._lock:
            found = [str(row[0]) for row in self._db.execute(f"PRAGMA {pragma}")]
        return [] if found == ["ok"] else found

    def fix_accounting(self) -> bool:
        """Make the per-directory running sums agree with the rows; True if they did not."""
        with self._write():
            return self._fix_sums()

    def _fix_sums(self) -> bool:
        wrong = False
        for dir_id in range(len(self.quotas)):
            expected = self._db.execute(
                "SELECT coalesce(sum(size), 0), coalesce(sum(pinned * size), 0), count(*), "
                "coalesce(sum((queue = 0) * size), 0), coalesce(sum((queue = 1) * size), 0) "
                "FROM blocks WHERE dir=?",
                (dir_id,),
            ).fetchone()
            actual = self._db.execute(
                "SELECT used, pinned, blocks, small, main FROM dirs WHERE dir=?", (dir_id,)
            ).fetchone()
            if tuple(actual or ()) != tuple(expected):
                wrong = True
                self._db.execute(
                    "INSERT OR REPLACE INTO dirs(dir, used, pinned, blocks, small, main) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (dir_id, *expected),
                )
        return wrong

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


DATABASES_COUNTED_FROM_BYTES = 64 * 1024 * 1024
"""Quota from which the databases beside the blocks (the index, the metadata cache, their logs:
about 2.2 MiB plus 250 bytes a block) count in it, so the directory holds no more than the quota:
at 64 MiB they take about 4% of it. Below, they would take most of a small quota (the tests'
256 KiB ones) and are left out, as before."""

BUSY_TIMEOUT_SECONDS = 10.0
"""How long an index operation waits for another process's write transaction before it gives
up and that one operation bypasses the SSD tier. Transactions take milliseconds; only a stuck
holder (a SIGSTOPped process, a hung disk) makes anyone wait this long."""


def is_corruption(exc: BaseException) -> bool:
    """Whether the index file itself is damaged: sqlite says so, its text does not decode, or
    its schema is not ours."""
    return isinstance(exc, SchemaDamagedError) or is_damage(exc)


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` means another connection holds the database (retrying can succeed)."""
    return isinstance(exc, sqlite3.OperationalError) and sqlite_code(exc) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


@dataclass(frozen=True)
class FoundBlock:
    """A block file found in a directory, as its name and header describe it."""

    digest: str
    dir: int
    size: int
    """Bytes the file takes (what the quota counts)."""
    raw: int
    mtime: float


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild of a damaged index found and kept."""

    moved_to: str
    blocks: int
    pins: int


def open_index(
    path: str,
    *,
    quotas: list[int],
    policy: EvictionPolicy,
    found_blocks: Callable[[], Iterable[FoundBlock]],
    repair_lock: str,
    damaged: tuple[int, int] | None = None,
) -> tuple[BlockIndex, RebuildReport | None]:
    """Open (creating if needed) the index at ``path``; the report is set when it was rebuilt.

    Whenever this call creates the index (first use, or the old one was deleted or emptied),
    the block files ``found_blocks`` yields are accounted for in the creating transaction, so
    no other process can store a block before that is done and no file is outside the quota.

    Only a database sqlite reports as damaged (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``), or the
    file ``damaged`` names (its identity, as :func:`file_identity` gave it when a running
    process met the damage), is replaced: it is moved to ``index.sqlite.corrupt`` and the index
    rebuilt from the block files (the directory is the truth; pins that can still be read are
    kept). This runs under an exclusive lock on ``repair_lock``, and not at all if another
    process has replaced the file since. A busy, locked, read-only or missing database raises
    sqlite3.Error / OSError: the caller bypasses the tier and never throws the index away.
    """
    if damaged is None:
        try:
            return _open(path, quotas=quotas, policy=policy, found_blocks=found_blocks), None
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if not is_corruption(exc):
                raise
            damaged = file_identity(path)
            log.debug("cache index %s is damaged (%s)", path, exc)
    with exclusive_lock(repair_lock):
        if file_identity(path) != damaged:
            # Another process repaired (or replaced) it while we waited for the lock.
            return _open(path, quotas=quotas, policy=policy, found_blocks=found_blocks), None
        return _rebuild(path, quotas=quotas, policy=policy, found_blocks=found_blocks)


def _rebuild(
    path: str,
    *,
    quotas: list[int],
    policy: EvictionPolicy,
    found_blocks: Callable[[], Iterable[FoundBlock]],
) -> tuple[BlockIndex, RebuildReport]:
    aside = f"{path}.corrupt"
    for suffix in ("", "-wal", "-shm"):
        # One copy of the last damaged index is kept for inspection; earlier ones are replaced.
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
        elif os.path.exists(aside + suffix):
            os.unlink(aside + suffix)
    pins, owners = _salvage(aside)
    index = _open(
        path,
        quotas=quotas,
        policy=policy,
        found_blocks=found_blocks,
        pins=pins,
        owners=owners,
        salvaged=_salvage_charges(aside),
    )
    blocks = sum(u.blocks for u in index.usage())
    log.warning(
        "cache index %s was damaged: moved to %s and rebuilt from the %d block files in the "
        "cache directory (%d pins kept; counters start again)",
        path,
        aside,
        blocks,
        len(pins),
    )
    return index, RebuildReport(aside, blocks, len(pins))


def _salvage(
    damaged_path: str,
) -> tuple[list[tuple[str, str, str, int, float]], dict[str, tuple[str, str]]]:
    """Pins, and which object each block belongs to, as far as the damaged index still reads."""
    pins: list[tuple[str, str, str, int, float]] = []
    owners: dict[str, tuple[str, str]] = {}
    try:
        db = sqlite3.connect(f"file:{damaged_path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return pins, owners
    try:
        for query, sink in (
            ("SELECT name, backend, prefix, reserved, created FROM pins", pins.append),
            (
                "SELECT digest, backend, path FROM blocks",
                lambda row: owners.__setitem__(row[0], (row[1], row[2])),
            ),
        ):
            try:
                for row in db.execute(query):
                    sink(tuple(row))
            except (sqlite3.Error, UnicodeDecodeError):
                continue  # what was read before the damage is kept
    finally:
        db.close()
    return pins, owners


@dataclass
class _Salvaged:
    """Charge and limit rows (checksums included) read from a damaged index; only those that
    still verify are kept in the rebuilt one."""

    charges: list[tuple[Any, ...]] = field(default_factory=list)
    limits: list[tuple[Any, ...]] = field(default_factory=list)


def _salvage_charges(damaged_path: str) -> _Salvaged:
    kept = _Salvaged()
    try:
        db = sqlite3.connect(f"file:{damaged_path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return kept
    try:
        for query, sink in (
            ("SELECT name, dir, bytes, check_sum FROM charges", kept.charges),
            ("SELECT dir, quota, check_sum FROM limits", kept.limits),
        ):
            try:
                sink.extend(tuple(row) for row in db.execute(query))
            except (sqlite3.Error, UnicodeDecodeError):
                continue  # an index of schema 1 has none; a damaged table gives what it can
    finally:
        db.close()
    return kept


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _open(
    path: str,
    *,
    quotas: list[int],
    policy: EvictionPolicy,
    found_blocks: Callable[[], Iterable[FoundBlock]],
    pins: list[tuple[str, str, str, int, float]] | None = None,
    owners: dict[str, tuple[str, str]] | None = None,
    salvaged: _Salvaged | None = None,
) -> BlockIndex:
    new = not os.path.exists(path)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    # A flipped byte in a text column must not raise for the whole index ("Could not decode to
    # UTF-8 column", which took the tier offline): decoded with U+FFFD, the row no longer
    # matches its checksum and is dropped as a damaged row.
    db.text_factory = _decode_text
    try:
        if new:
            # A new file and its schema were synced about six times (tens of ms on a busy
            # disk, at every first use of a cache directory). Unsynced, only a power loss in
            # that moment can damage it (a killed process cannot); it holds nothing yet, and
            # is rebuilt from the block files as any damaged index is.
            db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA journal_mode=WAL")
        bound_wal(db)
        if not _is_current(db, len(quotas)):
            # Only a new index (or an older schema) needs the write lock at open: a process
            # that holds it stuck (SIGSTOPped) does not keep others from opening the index.
            _create(db, len(quotas), found_blocks, pins or [], owners or {}, salvaged)
        # NORMAL: a commit is durable across process crashes (SIGKILL), only power loss can drop
        # the last transactions; the ordering described above keeps that safe, and it saves an
        # fsync per miss.
        db.execute("PRAGMA synchronous=NORMAL")
        return BlockIndex(db, quotas=quotas, policy=policy)
    except BaseException:
        db.close()
        raise


class SchemaDamagedError(sqlite3.DatabaseError):
    """The index's schema is not ours (a damaged ``sqlite_master`` that sqlite still parses)."""


def _expected_columns() -> dict[str, list[str]]:
    db = sqlite3.connect(":memory:")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


_EXPECTED_COLUMNS = _expected_columns()


def _is_current(db: sqlite3.Connection, dirs: int) -> bool:
    """Whether the index has our whole schema (False: new, or from before a column existed).
    Raises :class:`SchemaDamagedError` for a schema that is neither."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return False
    missing = set(_EXPECTED_COLUMNS) - tables
    if tables - set(_EXPECTED_COLUMNS) or not missing <= _ADDED_IN_2:
        raise SchemaDamagedError(f"unexpected tables {sorted(tables)}")
    for table, expected in _EXPECTED_COLUMNS.items():
        if table in missing:
            continue
        actual = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if table == "blocks" and actual in (
            [c for c in expected if c not in ("writing", "check_sum")],
            [c for c in expected if c != "check_sum"],
        ):
            return False  # an index made before the column existed
        if actual != expected:
            raise SchemaDamagedError(f"table {table} has columns {actual}")
    if missing:
        return False  # an index of schema 1: upgraded by _create
    known = db.execute("SELECT count(*) FROM dirs WHERE dir < ?", (dirs,)).fetchone()[0]
    return bool(known == dirs)


def _create(
    db: sqlite3.Connection,
    dirs: int,
    found_blocks: Callable[[], Iterable[FoundBlock]],
    pins: list[tuple[str, str, str, int, float]],
    owners: dict[str, tuple[str, str]],
    salvaged: _Salvaged | None = None,
) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        created = db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(blocks)")}
        if "writing" not in columns:  # an index made before the column existed
            db.execute("ALTER TABLE blocks ADD COLUMN writing TEXT NOT NULL DEFAULT ''")
        if "check_sum" not in columns:  # rows from before checksums: taken as they are, once
            db.execute("ALTER TABLE blocks ADD COLUMN check_sum TEXT NOT NULL DEFAULT ''")
            rows = db.execute(f"SELECT {_ROW} FROM blocks").fetchall()
            db.executemany(
                "UPDATE blocks SET check_sum=? WHERE digest=?",
                [(row_sum(*row[:-1]), row[0]) for row in rows],
            )
        for dir_id in range(dirs):
            db.execute("INSERT OR IGNORE INTO dirs(dir) VALUES (?)", (dir_id,))
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
        if created:
            _account_found(db, found_blocks(), pins, owners)
            kept = salvaged or _Salvaged()
            db.executemany(
                "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?)",
                [r for r in kept.charges if _charge_holds(r, dirs)],
            )
            db.executemany(
                "INSERT OR IGNORE INTO limits VALUES (?, ?, ?)",
                [r for r in kept.limits if _limit_holds(r) and r[0] < dirs],
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _account_found(
    db: sqlite3.Connection,
    found: Iterable[FoundBlock],
    pins: list[tuple[str, str, str, int, float]],
    owners: dict[str, tuple[str, str]],
) -> None:
    """Rows for the block files already in the directories of a new index, oldest first in
    the small queue (nothing is known of their use), pinned where a kept pin covers them."""
    db.executemany("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?)", pins)
    records = [PinRecord(p[0], p[1], p[2], p[3]) for p in pins]
    seq = 0
    for block in sorted(found, key=lambda b: b.mtime):
        backend, path = owners.get(block.digest, ("", ""))
        pinned = _matches(records, backend, path) if backend else False
        seq += 1
        row = _with_sum(
            block.digest, block.dir, block.size, block.raw, 0, int(pinned), backend, path, ""
        )
        inserted = db.execute(
            f"INSERT OR IGNORE INTO blocks({_ROW}, freq, seq) VALUES (?,?,?,?,?,?,?,?,?,?,0,?)",
            (*row, seq),
        ).rowcount
        if inserted:
            db.execute(
                "UPDATE dirs SET used=used+?, pinned=pinned+?, blocks=blocks+1, small=small+? "
                "WHERE dir=?",
                (block.size, block.size if pinned else 0, block.size, block.dir),
            )
    db.execute("UPDATE meta SET value=? WHERE key='seq'", (seq,))
