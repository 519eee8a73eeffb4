"""What the sqlite files edgecache keeps (block index, metadata cache, hub store) share: telling
a damaged file from a busy or unreadable one, knowing whether another process replaced it, the
lock under which one process repairs it, the bound on their write-ahead logs, and moving a
table of large rows out of the ``WITHOUT ROWID`` form.

Sits at the bottom of the stack with :mod:`edgecache.yamlio`: :mod:`edgecache.cache._index`,
:mod:`edgecache.engine._metadata` and :mod:`edgecache.hub._store` use it. Damage is repaired
(moved aside, rebuilt); a busy, locked or read-only file never is, since nothing is wrong with
its bytes.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = [
    "WAL_BOUND_BYTES",
    "WAL_CHECKPOINT_PAGES",
    "WAL_LIMIT_BYTES",
    "bound_wal",
    "disk_bytes",
    "exclusive_lock",
    "file_identity",
    "give_rowids",
    "is_damage",
    "sqlite_code",
]

WAL_CHECKPOINT_PAGES = 256
"""Pages (4 KiB each) a write-ahead log holds before the commit that passes the mark copies them
into the database (a checkpoint): about 1 MiB. sqlite's default, 1000 pages, let the index's
log of a cache of small blocks outgrow the blocks themselves (3.2 MB of log for 2 MB of 16 KiB
blocks, every block write rewriting a few pages); a checkpoint writes only the distinct pages,
a few dozen, so checkpointing four times as often costs little."""
WAL_LIMIT_BYTES = 1024 * 1024
"""What a log is cut back to when a writer starts it over after a checkpoint
(``journal_size_limit``): without it the file keeps the largest size it ever had."""


WAL_BOUND_BYTES = WAL_CHECKPOINT_PAGES * (4096 + 24) + 128 * 1024
"""About the most a log holds: the checkpoint mark's frames (a page and its 24-byte header each)
and the commit that passes it (a few dozen pages at most)."""


def bound_wal(db: sqlite3.Connection) -> None:
    """Keep the write-ahead log of ``db`` near :data:`WAL_CHECKPOINT_PAGES` pages (it grows
    past that only while another connection reads an older snapshot)."""
    db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")


def disk_bytes(path: str) -> int:
    """Bytes on disk of the database at ``path`` with its write-ahead log and shared-memory
    index (``-wal``, ``-shm``): what it takes from the directory."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with suppress(OSError):  # not there (no log yet), or gone meanwhile
            total += os.stat(path + suffix).st_size
    return total


def sqlite_code(exc: BaseException) -> int:
    """The primary sqlite result code of ``exc`` (0 when it has none)."""
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_damage(exc: BaseException) -> bool:
    """Whether the database file itself is damaged (not busy, locked, read-only): sqlite says
    so, or text it stores (the schema included) is no longer UTF-8."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    if isinstance(exc, sqlite3.DatabaseError) and any(
        # What sqlite says, without a result code of its own, of a damaged schema or header.
        sign in str(exc)
        for sign in ("Could not decode", "unsupported file format", "malformed")
    ):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and sqlite_code(exc) in (
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
    )


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


@contextmanager
def exclusive_lock(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its directory, if missing),
    waiting for whoever holds it: the one process that repairs a file at a time."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def give_rowids(db: sqlite3.Connection, table: str, create: str) -> None:
    """Move the rows of ``table``, if it is a ``WITHOUT ROWID`` table, into the table that
    ``create`` (its ``CREATE TABLE IF NOT EXISTS`` with rowids) makes, in one transaction.

    For tables of large rows (directory listings, OpenAPI documents): without rowids the key
    and the row share one B-tree, and a look-up that meets a row too large for its page reads
    the whole row to compare keys. Checked again inside the transaction, so processes opening
    the file at once move the rows once; none is dropped."""

    def without_rowid() -> bool:
        row = db.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)
        ).fetchone()
        return row is not None and "WITHOUT ROWID" in str(row[0]).upper()

    if not without_rowid():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if without_rowid():
            old = f"{table}_without_rowid"
            db.execute(f"ALTER TABLE {table} RENAME TO {old}")
            db.execute(create)
            columns = ", ".join(str(r[1]) for r in db.execute(f"PRAGMA table_info({old})"))
            db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {old}")
            db.execute(f"DROP TABLE {old}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
