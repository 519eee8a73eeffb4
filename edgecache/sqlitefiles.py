"""What the sqlite files the cache keeps (block index, metadata cache) share: telling a damaged
file from a busy or unreadable one, knowing whether another process replaced it, and the lock
under which one process repairs it.

Sits at the bottom of the stack with :mod:`edgecache.yamlio`: :mod:`edgecache.cache._index`
and :mod:`edgecache.engine._metadata` use it. Damage is repaired (moved aside, rebuilt); a busy,
locked or read-only file never is, since nothing is wrong with its bytes.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["exclusive_lock", "file_identity", "is_damage", "sqlite_code"]


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
