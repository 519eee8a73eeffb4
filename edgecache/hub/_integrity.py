"""Integrity of the hub's store: what proves a stored record is the one that was written, and
what shows a database file was emptied or cut short before sqlite opens it.

sqlite's own checks (``PRAGMA quick_check``) see broken pages, not changed bytes inside a valid
record: one flipped bit in a recorded body passed them and was served (issue #10). So every row
the store serves from carries an xxh3-64 checksum over all of its fields that decide what is
served and to whom (key columns included: a flipped namespace would move an object into another
namespace's answers); a row that fails it is dropped, never served. Missing rows are no row's
business: a file shorter than its own header says is truncated, and a zero-length file is a
store that was emptied; :func:`file_problem` reports both before sqlite quietly treats them as
a smaller or a brand-new database.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import xxhash

__all__ = ["file_problem", "row_checksum"]

_HEADER = b"SQLite format 3\x00"


def row_checksum(*fields: str | bytes | int) -> int:
    """xxh3-64 of the fields, each length-prefixed (so no two field lists collide by moving a
    boundary), as a signed 64-bit integer (what sqlite stores in an INTEGER column)."""
    # surrogateescape: text sqlite could not decode (a flipped bit) still hashes to the bytes
    # on disk, so it fails the comparison instead of raising.
    parts = [
        f if isinstance(f, bytes) else str(f).encode("utf-8", "surrogateescape") for f in fields
    ]
    lengths = struct.pack(f"<{len(parts)}Q", *map(len, parts))
    value = xxhash.xxh3_64_intdigest(lengths + b"".join(parts))
    return value - (1 << 64) if value >= (1 << 63) else value


def file_problem(path: Path) -> tuple[str, str] | None:
    """``(kind, message)`` when the database file at ``path`` was emptied (``empty_file``) or
    cut short (``truncated_file``); None when it is absent or looks whole.

    Only judged without a write-ahead log holding data: with one, sqlite's recovery may still
    complete the file (a checkpoint interrupted after writing page 1), and quick_check judges.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return None
    try:
        wal_size = os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        wal_size = 0
    if wal_size > 0:
        return None
    if size == 0:
        return "empty_file", f"{path} is empty (0 bytes): everything recorded before is gone"
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(_HEADER):
        return None  # not a database at all: sqlite says so, and the file is set aside
    if len(header) < 100:
        return "truncated_file", f"{path} is cut short ({size} bytes, not even a header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid only while the change counter matches "version valid for".
    pages_valid = pages > 0 and header[24:28] == header[92:96]
    if page_size < 512 or size % page_size or (pages_valid and size < pages * page_size):
        expected = f"{pages * page_size} bytes" if pages_valid else "whole pages"
        return (
            "truncated_file",
            f"{path} is cut short ({size} bytes where its header says {expected})",
        )
    return None
