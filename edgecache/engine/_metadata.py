"""Metadata cache: object infos and directory listings, with a TTL, kept on disk for offline use.

The filesystem asks here before the backend for ``info``/``ls`` (and therefore ``find``,
``glob``, ``walk``, ``exists``, ``open``): within ``metadata_ttl`` seconds an answer is served
without a round trip, which is what makes small-file loops fast over a long link. Entries are
also written to ``<cache_dir>/metadata.sqlite`` so that a later process, or this one while the
backend is unreachable, can still answer from the last known state. Writes through edgecache
invalidate the path, its listing and its ancestors' listings.

Each info is stored with the object version the backend computed from it, so a version never
depends on how a datetime survives a JSON round trip.
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

__all__ = ["CachedInfo", "MetadataCache"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    backend TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    data TEXT NOT NULL, fetched REAL NOT NULL,
    PRIMARY KEY(backend, kind, path)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class CachedInfo:
    """An object's info as the backend gave it, its version, and when it was fetched."""

    info: dict[str, Any]
    version: str
    fetched: float


def _parent(path: str) -> str:
    path = path.rstrip("/")
    return path.rsplit("/", 1)[0] if "/" in path else ""


class MetadataCache:
    """Two-level (memory, sqlite) cache of infos and listings for all backends of a cache dir."""

    def __init__(self, db_path: str | None, *, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._infos: dict[tuple[str, str], CachedInfo] = {}
        self._listings: dict[tuple[str, str], tuple[list[CachedInfo], float]] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if db_path is not None:
            try:
                os.makedirs(os.path.dirname(db_path), exist_ok=True)
                db = sqlite3.connect(
                    db_path, timeout=30, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                log.warning(
                    "metadata cache %s unusable (%s); keeping metadata in memory", db_path, exc
                )

    def _fresh(self, fetched: float) -> bool:
        return time.time() - fetched <= self.ttl_seconds

    # --- infos ---------------------------------------------------------------------------------
    def info(self, backend: str, path: str, *, allow_stale: bool = False) -> CachedInfo | None:
        """The cached info of ``path`` if fresh (or any age with ``allow_stale``)."""
        entry = self._infos.get((backend, path))
        if entry is None:
            entry = self._load_info(backend, path) or self._info_from_listing(backend, path)
        if entry is None or not (allow_stale or self._fresh(entry.fetched)):
            return None
        return entry

    def _info_from_listing(self, backend: str, path: str) -> CachedInfo | None:
        # Listings are stored whole, not as one row per entry: a process that did not list
        # the directory itself finds an entry's info in its parent's listing.
        parent = _parent(path)
        if parent == path:
            return None
        for key in (parent, parent + "/"):
            entries = self.listing(backend, key, allow_stale=True)
            if entries is not None:
                for entry in entries:
                    if entry.info.get("name") == path:
                        self._infos[(backend, path)] = entry
                        return entry
        return None

    def _load_info(self, backend: str, path: str) -> CachedInfo | None:
        row = self._select(backend, "info", path)
        if row is None:
            return None
        data, fetched = row
        payload = json.loads(data)
        entry = CachedInfo(payload["info"], payload["version"], fetched)
        self._infos[(backend, path)] = entry
        return entry

    def put_info(self, backend: str, path: str, info: dict[str, Any], version: str) -> CachedInfo:
        """Remember ``info`` (with its version) as fetched now."""
        entry = CachedInfo(info, version, time.time())
        self._infos[(backend, path)] = entry
        self._store(backend, "info", path, {"info": info, "version": version}, entry.fetched)
        return entry

    # --- listings ------------------------------------------------------------------------------
    def listing(
        self, backend: str, path: str, *, allow_stale: bool = False
    ) -> list[CachedInfo] | None:
        """The cached listing of directory ``path`` if fresh (or any age with ``allow_stale``)."""
        cached = self._listings.get((backend, path))
        if cached is None:
            row = self._select(backend, "ls", path)
            if row is not None:
                entries = [CachedInfo(e["info"], e["version"], row[1]) for e in json.loads(row[0])]
                cached = self._listings[(backend, path)] = (entries, row[1])
        if cached is None or not (allow_stale or self._fresh(cached[1])):
            return None
        return cached[0]

    def put_listing(
        self, backend: str, path: str, entries: list[tuple[dict[str, Any], str]]
    ) -> list[CachedInfo]:
        """Remember a directory listing; each entry's info is remembered too."""
        now = time.time()
        infos = [CachedInfo(info, version, now) for info, version in entries]
        self._listings[(backend, path)] = (infos, now)
        for entry in infos:
            self._infos[(backend, entry.info["name"])] = entry
        self._store(
            backend, "ls", path, [{"info": e.info, "version": e.version} for e in infos], now
        )
        return infos

    # --- invalidation --------------------------------------------------------------------------
    def invalidate(self, backend: str, path: str, *, recursive: bool = False) -> None:
        """Forget ``path``, its listing, its ancestors' listings (and with ``recursive``, all
        entries below it)."""
        with self._lock:
            self._infos.pop((backend, path), None)
            self._listings.pop((backend, path), None)
            ancestors = []
            p = path
            while True:
                parent = _parent(p)
                if parent == p:
                    break
                ancestors.append(parent)
                self._listings.pop((backend, parent), None)
                self._listings.pop((backend, parent + "/"), None)
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
        if self._db is None:
            return
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM entries WHERE backend=? AND path=?", (backend, path))
            self._db.executemany(
                "DELETE FROM entries WHERE backend=? AND kind='ls' AND path IN (?, ?)",
                [(backend, a, a + "/") for a in ancestors],
            )
            if recursive:
                self._db.execute(
                    "DELETE FROM entries WHERE backend=? AND path>=? AND path<?",
                    (backend, prefix, prefix + "\U0010ffff"),
                )
            self._db.execute("COMMIT")

    def invalidate_backend(self, backend: str) -> None:
        """Forget every info and listing of ``backend``."""
        with self._lock:
            for infos in (self._infos, self._listings):
                for key in [k for k in infos if k[0] == backend]:
                    del infos[key]
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("DELETE FROM entries WHERE backend=?", (backend,))

    # --- persistence ---------------------------------------------------------------------------
    def _select(self, backend: str, kind: str, path: str) -> tuple[str, float] | None:
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT data, fetched FROM entries WHERE backend=? AND kind=? AND path=?",
                    (backend, kind, path),
                ).fetchone()
            except sqlite3.Error:
                return None
        return None if row is None else (row[0], row[1])

    def _store(self, backend: str, kind: str, path: str, payload: Any, fetched: float) -> None:
        if self._db is None:
            return
        data = json.dumps(payload, default=str)
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                (backend, kind, path, data, fetched),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
