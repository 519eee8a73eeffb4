"""Metadata cache: object infos and directory listings, with a TTL, kept on disk for offline use.

The read engine (:mod:`edgecache.engine`) asks here before the backend for ``info``/``ls`` (and
therefore ``find``, ``glob``, ``walk``, ``exists``, ``open``): within ``metadata_ttl`` seconds an
answer is served without a round trip, which is what makes small-file loops fast over a long
link. One cache serves every filesystem on a cache directory, whatever its TTL: the TTL is the
caller's (``max_age``), the entries are the directory's. Entries are also written to
``<cache_dir>/metadata.sqlite`` so that a later process, or this one while the backend is
unreachable, can still answer from the last known state. Writes through edgecache invalidate the
path, its listing and its ancestors' listings; a path found missing is remembered as missing
(a negative entry with the same TTL), which says nothing about its parent's listing.

Each info is stored with the object version the backend computed from it, so a version never
depends on how a datetime survives a JSON round trip.

A row's bytes decide what a user reads (an object's size bounds every read of it), so every row
carries an xxh3-64 checksum of its key, payload and fetch time, verified on read together with
the payload's shape. A row that fails (a flipped bit, an edited size, a torn page) is dropped and
logged once, and the lookup is a miss: online the backend is asked again, offline the read fails
with :class:`~edgecache.errors.BackendUnavailableError`; never wrong bytes, never a decoding
traceback. Rows of earlier versions (table ``entries``, without checksums) cannot be verified and
are dropped on open.

A database sqlite reports damaged (a garbage header, a torn page, a schema that no longer
decodes), on open or while in use, is repaired there and then by the process that meets it,
under ``<cache_dir>/locks/metadata.lock`` and only if no other process repaired it first: the
file is moved to ``metadata.sqlite.corrupt`` (one copy kept) and a new one is written with the
rows of the old one that still verify, with one warning saying so. Only our own database file
(and its ``-wal``/``-shm``) is ever moved; a busy or read-only one is never repaired, it is
bypassed (metadata in memory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import xxhash

from edgecache.sqlitefiles import (
    bound_wal,
    exclusive_lock,
    file_identity,
    give_rowids,
    is_damage,
)

__all__ = ["METADATA_NAME", "CachedInfo", "MetadataCache", "parent_of"]

log = logging.getLogger(__name__)

METADATA_NAME = "metadata.sqlite"
"""The metadata cache's database in the cache directory (the SSD tier counts its bytes with the
index's: :class:`~edgecache.engine._store.Store` tells it where it is)."""

_UNLISTED_SECONDS = 1.0
"""A directory the database had no listing of is asked again after this long by a caller
that only wants a hint (``listing(..., hint=True)``), not on every call: every warm ``open``
asks for its directory's listing (scan detection), and a database query per open was a tenth
of a warm small-file read. Listings this process stores are seen at once; those another
process stores, within this long."""
_UNLISTED_KEPT = 4096
"""Directories remembered as not listed (then it starts afresh)."""
_LISTING_INDEXES_KEPT = 256
"""Listings whose entries are kept by name too, for infos looked up in them (then it starts
afresh: each is made again, in one pass over its listing, when next needed)."""

MAX_REPAIRS = 3
"""Repairs one process attempts before it keeps metadata in memory only: a disk that damages
every file written to it would otherwise be rewritten again and again."""

_TABLE = """
CREATE TABLE IF NOT EXISTS checked_entries(
    backend TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    data TEXT NOT NULL, fetched REAL NOT NULL, checksum TEXT NOT NULL,
    PRIMARY KEY(backend, kind, path)
);
"""
# A table with rowids, its key in an index of its own: in a WITHOUT ROWID table the key and
# the row share one B-tree, and a look-up that meets a row too large for its page (a listing
# of thousands of files is hundreds of KiB) reads the whole row to compare keys. Each info
# miss next to a large listing then cost 40-70 us instead of 6 (a fresh process's first
# pass over a warm 3,000-file directory: a select per file).
_SCHEMA = _TABLE + "DROP TABLE IF EXISTS entries;\n"


@dataclass(frozen=True, slots=True)
class CachedInfo:
    """An object's info as the backend gave it, its version, and when it was fetched."""

    info: dict[str, Any]
    version: str
    fetched: float


def parent_of(path: str) -> str:
    """The directory holding ``path`` ("" at the top)."""
    path = path.rstrip("/")
    return path.rsplit("/", 1)[0] if "/" in path else ""


class DamagedRowError(ValueError):
    """A stored row whose checksum, encoding or shape is wrong: it must not be used."""


def row_checksum(backend: str, kind: str, path: str, data: str, fetched: float) -> str:
    """xxh3-64 (hex) of everything a row says: its key, its payload and when it was fetched."""
    fields = (backend, kind, path, data, fetched.hex())
    return xxhash.xxh3_64_hexdigest("\0".join(fields).encode("utf-8", "surrogatepass"))


def _verified_payload(backend: str, kind: str, path: str, row: tuple[Any, ...]) -> Any:
    """The decoded payload of ``row`` (data, fetched, checksum) if its checksum holds."""
    data, fetched, checksum = row
    if not (isinstance(data, str) and isinstance(fetched, float) and isinstance(checksum, str)):
        raise DamagedRowError("a column has the wrong type")
    if row_checksum(backend, kind, path, data, fetched) != checksum:
        raise DamagedRowError("checksum mismatch")
    try:
        return json.loads(data)
    except ValueError as exc:  # RecursionError cannot come from a payload we wrote
        raise DamagedRowError(f"undecodable payload: {exc}") from exc


def _entry_from(payload: Any, fetched: float) -> CachedInfo:
    """A :class:`CachedInfo` from a stored ``{"info": ..., "version": ...}``, shape checked."""
    if not isinstance(payload, dict):
        raise DamagedRowError("an entry is not an object")
    info, version = payload.get("info"), payload.get("version")
    if not (isinstance(info, dict) and isinstance(version, str)):
        raise DamagedRowError("an entry lacks its info or version")
    if not isinstance(info.get("name"), str):
        raise DamagedRowError("an info lacks its name")
    size = info.get("size")
    if info.get("type") != "directory" and (
        not isinstance(size, int) or isinstance(size, bool) or size < 0
    ):
        raise DamagedRowError("a file's info lacks a valid size")
    return CachedInfo(info, version, fetched)


class MetadataCache:
    """Two-level (memory, sqlite) cache of infos and listings for all backends of a cache dir."""

    def __init__(self, db_path: str | None, *, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._infos: dict[tuple[str, str], CachedInfo] = {}
        self._listings: dict[tuple[str, str], tuple[list[CachedInfo], float]] = {}
        self._missing: dict[tuple[str, str], float] = {}
        """(backend, path) -> when it was found missing."""
        self._unlisted: dict[tuple[str, str], float] = {}
        """(backend, directory) -> when the database had no listing of it (monotonic)."""
        self._listing_names: dict[
            tuple[str, str], tuple[list[CachedInfo], dict[str, CachedInfo]]
        ] = {}
        """(backend, directory) -> a listing and its entries by name."""
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._db_path = db_path
        self._reported: set[tuple[str, str, str]] = set()
        self._db_error_reported = False
        self._closed = False
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the database file the connection has open."""
        self.repaired: list[str] = []
        """What each repair this process made found (for ``stats --verify``)."""
        if db_path is not None:
            try:
                self._db = _connect(db_path)
                self._identity = file_identity(db_path)
            except (OSError, sqlite3.Error, UnicodeError) as exc:
                # UnicodeError: a schema whose text a flipped bit made undecodable.
                if is_damage(exc):
                    self._db = self._repair(db_path, exc, file_identity(db_path))
                else:
                    log.warning(
                        "metadata cache %s unusable (%s); keeping metadata in memory",
                        db_path,
                        exc,
                    )

    def _repair(
        self, db_path: str, reason: BaseException, damaged: tuple[int, int] | None
    ) -> sqlite3.Connection | None:
        """A sound database at ``db_path`` in place of the damaged file ``damaged`` (its
        identity), or None (memory only). Runs under the repair lock; a file another process
        put in its place meanwhile is used as it is."""
        try:
            with exclusive_lock(os.path.join(os.path.dirname(db_path), "locks", "metadata.lock")):
                if file_identity(db_path) != damaged:
                    db = _connect(db_path)  # repaired by another process while we waited
                    self._identity = file_identity(db_path)
                    return db
                if len(self.repaired) >= MAX_REPAIRS:
                    raise OSError(f"damaged again after {MAX_REPAIRS} repairs")
                good, dropped = _rebuild(db_path)
                db = _connect(db_path)
                self._identity = file_identity(db_path)
        except (OSError, sqlite3.Error, UnicodeError) as exc:
            log.warning(
                "metadata cache %s is damaged (%s) and could not be repaired (%s); keeping "
                "metadata in memory",
                db_path,
                reason,
                exc,
            )
            return None
        self.repaired.append(f"{reason}")
        log.warning(
            "metadata cache %s was damaged (%s): moved to %s.corrupt and rebuilt with the %d "
            "rows that verify (%d dropped); the rest is asked from the backend again",
            db_path,
            reason,
            os.path.basename(db_path),
            len(good),
            len(dropped),
        )
        return db

    def _recover_in_use(self, exc: sqlite3.Error) -> None:
        """Damage met while in use (a torn page): repair it now, so that the rest of the
        cache keeps serving. Called without ``_lock`` held."""
        if self._db_path is None:
            return
        with self._lock:
            if self._db is None or self._closed:
                return
            self._db.close()
            self._db = None
        db = self._repair(self._db_path, exc, self._identity)
        with self._lock:
            if self._closed:
                if db is not None:
                    db.close()
            else:
                self._db = db

    def _fresh(self, fetched: float, max_age: float | None) -> bool:
        return time.time() - fetched <= (self.ttl_seconds if max_age is None else max_age)

    # --- infos ---------------------------------------------------------------------------------
    def info(
        self,
        backend: str,
        path: str,
        *,
        allow_stale: bool = False,
        max_age: float | None = None,
    ) -> CachedInfo | None:
        """The cached info of ``path`` if fetched within ``max_age`` seconds (default: the
        cache's TTL), or of any age with ``allow_stale``."""
        entry = self._infos.get((backend, path))
        if entry is None:
            entry = self._load_info(backend, path) or self._info_from_listing(backend, path)
        if entry is None or not (allow_stale or self._fresh(entry.fetched, max_age)):
            return None
        return entry

    def _info_from_listing(self, backend: str, path: str) -> CachedInfo | None:
        # Listings are stored whole, not as one row per entry: a process that did not list
        # the directory itself finds an entry's info in its parent's listing.
        parent = parent_of(path)
        if parent == path:
            return None
        for key in (parent, parent + "/"):
            entries = self.listing(backend, key, allow_stale=True)
            if entries is not None:
                entry = self._by_name(backend, key, entries).get(path)
                if entry is not None:
                    self._infos[(backend, path)] = entry
                    return entry
        return None

    def _by_name(
        self, backend: str, directory: str, entries: list[CachedInfo]
    ) -> dict[str, CachedInfo]:
        # Made once per listing: looking each file up by a walk of its directory's listing
        # made a fresh process's first pass over a directory quadratic (3,000 files: 150 us
        # a file; 100,000: milliseconds).
        key = (backend, directory)
        names = self._listing_names.get(key)
        if names is None or names[0] is not entries:
            if len(self._listing_names) >= _LISTING_INDEXES_KEPT:
                self._listing_names.clear()
            names = self._listing_names[key] = (
                entries,
                {str(e.info.get("name")): e for e in reversed(entries)},
            )
        return names[1]

    def _load_info(self, backend: str, path: str) -> CachedInfo | None:
        row = self._select(backend, "info", path)
        if row is None:
            return None
        payload, fetched = row
        try:
            entry = _entry_from(payload, fetched)
        except DamagedRowError as exc:
            self._drop_damaged(backend, "info", path, exc)
            return None
        self._infos[(backend, path)] = entry
        return entry

    def put_info(self, backend: str, path: str, info: dict[str, Any], version: str) -> CachedInfo:
        """Remember ``info`` (with its version) as fetched now."""
        entry = CachedInfo(info, version, time.time())
        self._infos[(backend, path)] = entry
        self._forget_missing(backend, [path])
        self._store(backend, "info", path, {"info": info, "version": version}, entry.fetched)
        return entry

    # --- listings ------------------------------------------------------------------------------
    def listing(
        self,
        backend: str,
        path: str,
        *,
        allow_stale: bool = False,
        max_age: float | None = None,
        hint: bool = False,
    ) -> list[CachedInfo] | None:
        """The cached listing of directory ``path`` if fetched within ``max_age`` seconds
        (default: the cache's TTL), or of any age with ``allow_stale``. With ``hint`` (a
        caller that only takes a hint from it: scan detection on every open), a directory the
        database had no listing of in the last second is not asked again."""
        key = (backend, path)
        cached = self._listings.get(key)
        if cached is None and not (hint and self._unlisted_lately(key)):
            row = self._select(backend, "ls", path)
            if row is not None:
                entries = self._listing_from(backend, path, *row)
                if entries is not None:
                    cached = self._listings[key] = (entries, row[1])
            if cached is None and hint:
                if len(self._unlisted) >= _UNLISTED_KEPT:
                    self._unlisted.clear()
                self._unlisted[key] = time.monotonic()
        if cached is None or not (allow_stale or self._fresh(cached[1], max_age)):
            return None
        return cached[0]

    def _unlisted_lately(self, key: tuple[str, str]) -> bool:
        checked = self._unlisted.get(key)
        return checked is not None and time.monotonic() - checked < _UNLISTED_SECONDS

    def _listing_from(
        self, backend: str, path: str, payload: Any, fetched: float
    ) -> list[CachedInfo] | None:
        try:
            if not isinstance(payload, list):
                raise DamagedRowError("a listing is not a list")
            return [_entry_from(entry, fetched) for entry in payload]
        except DamagedRowError as exc:
            self._drop_damaged(backend, "ls", path, exc)
            return None

    def put_listing(
        self, backend: str, path: str, entries: list[tuple[dict[str, Any], str]]
    ) -> list[CachedInfo]:
        """Remember a directory listing; each entry's info is remembered too."""
        return self.put_listings(backend, {path: entries})[path]

    def put_listings(
        self, backend: str, listings: dict[str, list[tuple[dict[str, Any], str]]]
    ) -> dict[str, list[CachedInfo]]:
        """Remember several directory listings (a tree listed at once) in one transaction."""
        now = time.time()
        out: dict[str, list[CachedInfo]] = {}
        rows = []
        for path, entries in listings.items():
            infos = out[path] = [CachedInfo(info, version, now) for info, version in entries]
            self._listings[(backend, path)] = (infos, now)
            self._unlisted.pop((backend, path), None)
            for entry in infos:
                self._infos[(backend, entry.info["name"])] = entry
            self._forget_missing(backend, [path, *(str(e.info["name"]) for e in infos)])
            payload = [{"info": e.info, "version": e.version} for e in infos]
            rows.append((backend, "ls", path, payload, now))
        self._store_many(rows)
        return out

    # --- misses ---------------------------------------------------------------------------------
    def put_missing(self, backend: str, path: str, *, fetched: float | None = None) -> None:
        """Remember that ``path`` does not exist (as of ``fetched``, default now). Only this
        key: the listings of its parent and ancestors stay, one missing name changes none."""
        now = time.time() if fetched is None else fetched
        self._missing[(backend, path)] = now
        self._store(backend, "missing", path, {}, now)

    def missing(
        self,
        backend: str,
        path: str,
        *,
        allow_stale: bool = False,
        max_age: float | None = None,
    ) -> float | None:
        """When ``path`` was found missing, if within ``max_age`` seconds (or at any time, with
        ``allow_stale``); None if it was not. An info of the path fetched later wins: compare
        its ``fetched`` time."""
        fetched = self._missing.get((backend, path))
        if fetched is None:
            row = self._select(backend, "missing", path)
            if row is None:
                return None
            fetched = self._missing[(backend, path)] = row[1]
        return fetched if allow_stale or self._fresh(fetched, max_age) else None

    def _forget_missing(self, backend: str, paths: list[str]) -> None:
        # Memory only: a "missing" row another process left on disk is older than this entry,
        # and :meth:`missing` callers compare the two times.
        for path in paths:
            self._missing.pop((backend, path), None)

    # --- invalidation --------------------------------------------------------------------------
    def invalidate(self, backend: str, path: str, *, recursive: bool = False) -> None:
        """Forget ``path``, its listing, its ancestors' listings (and with ``recursive``, all
        entries below it)."""
        with self._lock:
            self._infos.pop((backend, path), None)
            self._listings.pop((backend, path), None)
            self._missing.pop((backend, path), None)
            ancestors = []
            p = path
            while True:
                parent = parent_of(p)
                if parent == p:
                    break
                ancestors.append(parent)
                self._listings.pop((backend, parent), None)
                self._listings.pop((backend, parent + "/"), None)
                # A write below a path recorded missing creates it (a directory, at least).
                self._missing.pop((backend, parent), None)
                if not parent or parent == "/":
                    break
                p = parent
            prefix = path.rstrip("/") + "/"
            if recursive:
                for key in [k for k in self._infos if k[0] == backend and k[1].startswith(prefix)]:
                    del self._infos[key]
                for key in [
                    k for k in self._listings if k[0] == backend and k[1].startswith(prefix)
                ]:
                    del self._listings[key]
                for key in [
                    k for k in self._missing if k[0] == backend and k[1].startswith(prefix)
                ]:
                    del self._missing[key]
        if self._db is None:
            return
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM checked_entries WHERE backend=? AND path=?", (backend, path)
            )
            self._db.executemany(
                "DELETE FROM checked_entries WHERE backend=? AND kind IN ('ls', 'missing') "
                "AND path IN (?, ?)",
                [(backend, a, a + "/") for a in ancestors],
            )
            if recursive:
                self._db.execute(
                    "DELETE FROM checked_entries WHERE backend=? AND path>=? AND path<?",
                    (backend, prefix, prefix + "\U0010ffff"),
                )
            self._db.execute("COMMIT")

    def invalidate_backend(self, backend: str) -> None:
        """Forget every info and listing of ``backend``."""
        with self._lock:
            for infos in (self._infos, self._listings, self._missing):
                for key in [k for k in infos if k[0] == backend]:
                    del infos[key]
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("DELETE FROM checked_entries WHERE backend=?", (backend,))

    # --- persistence ---------------------------------------------------------------------------
    def _select(self, backend: str, kind: str, path: str) -> tuple[Any, float] | None:
        """The verified, decoded payload of a row and its fetch time; None if there is none
        or it is damaged (then it is dropped)."""
        try:
            row = self._select_row(backend, kind, path)
            return None if row is None else (_verified_payload(backend, kind, path, row), row[1])
        except DamagedRowError as exc:
            self._drop_damaged(backend, kind, path, exc)
            return None

    def _select_row(self, backend: str, kind: str, path: str) -> tuple[Any, ...] | None:
        if self._db is None:
            return None
        damage: sqlite3.Error | None = None
        with self._lock:
            if self._db is None:
                return None
            try:
                row: tuple[Any, ...] | None = self._db.execute(
                    "SELECT data, fetched, checksum FROM checked_entries"
                    " WHERE backend=? AND kind=? AND path=?",
                    (backend, kind, path),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                if "decode" in str(exc):  # text that is not UTF-8: this row is damaged
                    raise DamagedRowError(f"undecodable text: {exc}") from exc
                self._report_db_error(exc)  # busy, locked, I/O: a miss, the row may be fine
                return None
            except UnicodeEncodeError:
                return None  # a key that is not UTF-8 (a file name from the OS) has no row
            except UnicodeError as exc:  # decoded by Python, not by sqlite: damaged all the same
                raise DamagedRowError(f"undecodable text: {exc}") from exc
            except sqlite3.Error as exc:
                if not is_damage(exc):
                    self._report_db_error(exc)
                    return None
                damage = exc
        if damage is not None:
            self._recover_in_use(damage)
            return None
        return row

    def _drop_damaged(self, backend: str, kind: str, path: str, reason: Exception) -> None:
        key = (backend, kind, path)
        if key not in self._reported:
            self._reported.add(key)
            log.warning(
                "metadata cache %s: dropped the damaged %s row of %s %s (%s); it is asked "
                "from the backend again",
                self._db_path,
                kind,
                backend,
                path,
                reason,
            )
        if self._db is None:
            return
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute(
                "DELETE FROM checked_entries WHERE backend=? AND kind=? AND path=?", key
            )

    def _report_db_error(self, exc: sqlite3.Error) -> None:
        if not self._db_error_reported:
            self._db_error_reported = True
            log.warning(
                "metadata cache %s cannot be read (%s); metadata is asked from the backend",
                self._db_path,
                exc,
            )

    def _store(self, backend: str, kind: str, path: str, payload: Any, fetched: float) -> None:
        self._store_many([(backend, kind, path, payload, fetched)])

    def _store_many(self, rows: list[tuple[str, str, str, Any, float]]) -> None:
        if self._db is None or not rows:
            return
        values = []
        for backend, kind, path, payload, fetched in rows:
            data = json.dumps(payload, default=str)
            checksum = row_checksum(backend, kind, path, data, fetched)
            values.append((backend, kind, path, data, fetched, checksum))
        sql = "INSERT OR REPLACE INTO checked_entries VALUES (?, ?, ?, ?, ?, ?)"
        try:
            with self._lock:
                if self._db is None:
                    return
                if len(values) == 1:
                    self._db.execute(sql, values[0])
                    return
                # One transaction: a tree of a hundred directories is one commit, not a hundred.
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(sql, values)
                except sqlite3.Error:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:  # busy or read-only: not stored, as if memory only
            if is_damage(exc):
                self._recover_in_use(exc)

    def verify(self) -> dict[str, Any]:
        """Check every stored row (``edgecache stats --verify``): rows failing their checksum
        or shape are dropped. A database sqlite reports as damaged is moved to
        ``metadata.sqlite.corrupt`` and rebuilt from the rows that still verify."""
        path = self._db_path
        if path is None or not os.path.exists(path):
            return {"rows": 0, "dropped_rows": 0, "rebuilt": False, "damage_found": False}
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        good, dropped, damaged = _read_rows(path)
        if damaged:
            _move_aside(path)
        db = _connect(path)
        with self._lock:
            self._db = db
            self._identity = file_identity(path)
            if damaged or dropped:
                _write_rows(db, good)
        if damaged or dropped:
            log.warning(
                "metadata cache %s: %s; %d damaged rows dropped, %d kept",
                path,
                "damaged database rebuilt" if damaged else "checked",
                len(dropped),
                len(good),
            )
        # Damage this process already repaired on open or in use counts as found.
        rebuilt = damaged or bool(self.repaired)
        return {
            "rows": len(good),
            "dropped_rows": len(dropped),
            "rebuilt": rebuilt,
            "damage_found": bool(rebuilt or dropped),
        }

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed cache keeps answering from memory)."""
        return self._closed

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None


def _connect(db_path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    new = not os.path.exists(db_path)
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        if new:
            # Creating the file and its schema synced it half a dozen times (tens of ms on a
            # busy disk, paid by every first use of a cache directory). Unsynced, only a power
            # loss in that moment can damage it (a killed process cannot), and it holds
            # nothing yet: damaged, it is handled as any damaged metadata file.
            db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA journal_mode=WAL")
        bound_wal(db)
        db.executescript(_SCHEMA)
        give_rowids(db, "checked_entries", _TABLE)  # its rows: what an offline site serves
        db.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        db.close()
        raise
    return db


_Row = tuple[Any, Any, Any, Any, Any, Any]


def _move_aside(path: str) -> None:
    """Our damaged database (and its WAL and shared memory) to ``<path>.corrupt``: one copy of
    the last one is kept for inspection, earlier ones are replaced."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, path + ".corrupt" + suffix)


def _write_rows(db: sqlite3.Connection, rows: list[_Row]) -> None:
    """The table rewritten with ``rows`` (a damaged row's key may not even be text any more,
    so it cannot be deleted by key)."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("DELETE FROM checked_entries")
    db.executemany("INSERT OR REPLACE INTO checked_entries VALUES (?,?,?,?,?,?)", rows)
    db.execute("COMMIT")


def _rebuild(path: str) -> tuple[list[_Row], list[tuple[Any, Any, Any]]]:
    """The damaged database at ``path`` moved aside and a new one written with its rows that
    verify; returns (rows kept, keys of rows dropped)."""
    good, dropped, _ = _read_rows(path)
    _move_aside(path)
    db = _connect(path)
    try:
        _write_rows(db, good)
    finally:
        db.close()
    return good, dropped


def _read_rows(path: str) -> tuple[list[_Row], list[tuple[Any, Any, Any]], bool]:
    """(rows that verify, keys of rows that do not, whether sqlite reports the file damaged)."""
    good: list[_Row] = []
    dropped: list[tuple[Any, Any, Any]] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return good, dropped, True
    damaged = False
    seen: set[tuple[Any, Any, Any]] = set()
    try:
        try:
            damaged = [r[0] for r in db.execute("PRAGMA integrity_check")] != ["ok"]
        except (sqlite3.DatabaseError, UnicodeError):
            damaged = True
        db.text_factory = bytes  # text that is not UTF-8 is a damaged row, not an error
        # A damaged page ends a scan: the rows before it are read forwards, those after it
        # backwards (the primary key's order), so one torn page loses only its own rows.
        for order in ("ASC", "DESC"):
            try:
                for raw in db.execute(
                    "SELECT backend, kind, path, data, fetched, checksum FROM checked_entries"
                    f" ORDER BY backend {order}, kind {order}, path {order}"
                ):
                    key = tuple(raw[:3])
                    if key in seen:
                        break  # the backward scan reached what the forward one read
                    seen.add(key)
                    try:
                        values = [v.decode() if isinstance(v, bytes) else v for v in raw]
                    except UnicodeDecodeError:
                        dropped.append(key)
                        continue
                    row: _Row = (values[0], values[1], values[2], values[3], values[4], values[5])
                    if _row_is_sound(row):
                        good.append(row)
                    else:
                        dropped.append((row[0], row[1], row[2]))
                else:
                    break  # the whole table was read in one scan
            except (sqlite3.DatabaseError, UnicodeError):
                damaged = True  # what was read before the damage is kept
    finally:
        db.close()
    return good, dropped, damaged


def _row_is_sound(row: _Row) -> bool:
    backend, kind, path, data, fetched, checksum = row
    if not (isinstance(backend, str) and isinstance(kind, str) and isinstance(path, str)):
        return False
    try:
        payload = _verified_payload(backend, kind, path, (data, fetched, checksum))
        if kind == "info":
            _entry_from(payload, fetched)
        elif kind == "ls":
            if not isinstance(payload, list):
                return False
            for entry in payload:
                _entry_from(entry, fetched)
    except DamagedRowError:
        return False
    return True
