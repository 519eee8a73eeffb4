"""The hub's crash-safe local store: where recorded answers live and offline answers come from.

One sqlite database (``<cache-dir>/hub.sqlite``) in WAL mode. A process killed mid-write or a
power cut loses at most the last transactions, never the database: every change (a whole list
replacement, a batch of watch events) is one transaction. ``synchronous=NORMAL`` keeps commits
cheap; WAL still guarantees a consistent database after a crash.

Keys follow design section 2.6: objects are stored per (component, group/version/resource,
list scope namespace, list selector, namespace, name), so two selectors of one component are two
independent lists, and a deleted object disappears when a fresh list of its key replaces the old
one. Single GETs use the pseudo-selector ``#get``. Discovery and other raw answers are stored per
(component, request key). Credentials are kept only as HMAC-SHA256 digests with a per-store
random salt, together with the (resource, namespace) pairs each one was allowed to read online
(grants). Lists and raw answers nothing refreshed for a long time can be expired while online.

All methods block; callers run them through :meth:`HubStore.read` / :meth:`HubStore.write`, which
use one writer thread (sqlite allows one writer) and a few reader threads (WAL readers never wait
for the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

__all__ = [
    "GET_SELECTOR",
    "HubStore",
    "ListRecord",
    "ObjectRow",
    "RawResponse",
    "StoredObject",
    "WatchChange",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: The selector under which single-object GET answers are stored.
GET_SELECTOR = "#get"

#: The store's format (``PRAGMA user_version``); older stores are migrated at open.
#: 0/1: grants per (resource, namespace). 2: grants per exact read scope.
STORE_FORMAT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    rv TEXT NOT NULL, kind TEXT NOT NULL, api_version TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (component, gvr, scope, selector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, rv TEXT NOT NULL, labels TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (component, gvr, scope, selector, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_name ON objects (component, gvr, namespace, name);
CREATE TABLE IF NOT EXISTS raw (
    component TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL,
    content_type TEXT NOT NULL, body BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (component, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credentials (
    component TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (component, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    component TEXT NOT NULL, digest TEXT NOT NULL, gvr TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, selector TEXT NOT NULL,
    PRIMARY KEY (component, digest, gvr, namespace, name, selector)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """One object to write: its identity, resourceVersion, labels (JSON text) and JSON body."""

    namespace: str
    name: str
    rv: str
    labels: str
    body: bytes


@dataclass(frozen=True, slots=True)
class WatchChange:
    """One recorded watch event: ``ADDED``/``MODIFIED`` upsert, ``DELETED`` removes."""

    type: str
    row: ObjectRow


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object read back for an offline answer."""

    namespace: str
    name: str
    labels: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ListRecord:
    """A recorded list: its key, the list resourceVersion and the list's kind/apiVersion."""

    scope: str
    selector: str
    rv: str
    kind: str
    api_version: str


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A recorded non-object answer (discovery, OpenAPI, server-side tables)."""

    status: int
    content_type: str
    body: bytes


class HubStore:
    """The sqlite store. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-store-write")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hub-store-read")
        self._salt = b""
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(cls, cache_dir: Path) -> HubStore:
        """Open (creating if needed) the store in ``cache_dir``; a corrupt file is set aside."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        store = cls(cache_dir / "hub.sqlite")
        try:
            store._initialise()
        except sqlite3.DatabaseError as exc:
            store.close()
            aside = store.path.with_name(f"hub.sqlite.corrupt-{int(time.time())}")
            log.warning("hub store %s is unreadable (%s); moved to %s", store.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{store.path}{suffix}", f"{aside}{suffix}")
            store = cls(cache_dir / "hub.sqlite")
            store._initialise()
        return store

    def _initialise(self) -> None:
        # Owner-only from the first byte: sqlite gives the WAL and shared-memory files the
        # database file's permissions, and the store holds cluster objects (Secrets for kubelet).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        self._migrate(conn)
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={STORE_FORMAT}")
        row = conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        if row is None:
            salt = secrets.token_bytes(32)
            with conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (salt,))
            row = conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        self._salt = bytes(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a store of an older format up to :data:`STORE_FORMAT` (a new store: nothing)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version >= STORE_FORMAT:
            return
        existing = {
            str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "grants" in existing and version < 2:
            # Format 1 granted a whole (resource, namespace) for any successful read, and
            # before issue #10 a non-canonical path could earn one for a read the upstream
            # refused. None of them can be trusted: clients earn exact grants again with their
            # next online read (credentials and recorded objects are kept).
            count = int(conn.execute("SELECT COUNT(*) FROM grants").fetchone()[0])
            with conn:
                conn.execute("DROP TABLE grants")
            log.warning(
                "hub store %s: dropped %d offline grants of the previous format; each client "
                "is served offline again after its next online read",
                self.path,
                count,
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Finish queued writes and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()

    # --- thread dispatch ----------------------------------------------------------------------
    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking read method on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(*args, **kwargs))

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking write method on the writer thread (FIFO: writes keep their order)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(*args, **kwargs))

    # --- credentials --------------------------------------------------------------------------
    def credential_digest(self, component: str, credential: str) -> str:
        """Salted digest of a credential (the Authorization header, or "" for anonymous)."""
        message = f"{component}\0{credential}".encode()
        return hmac.new(self._salt, message, hashlib.sha256).hexdigest()

    def add_credential(self, component: str, digest: str) -> None:
        conn = self._conn()
        conn.execute("INSERT OR IGNORE INTO credentials VALUES (?, ?)", (component, digest))

    def add_grant(
        self, component: str, digest: str, gvr: str, namespace: str, name: str, selector: str
    ) -> None:
        """The upstream answered this credential's read of exactly this scope (see
        ``RequestInfo.read_scope``: one named object, or a selector in a namespace or, with
        namespace "", cluster-wide) with success while online."""
        self._conn().execute(
            "INSERT OR IGNORE INTO grants VALUES (?, ?, ?, ?, ?, ?)",
            (component, digest, gvr, namespace, name, selector),
        )

    def has_grant(
        self, component: str, digest: str, gvr: str, namespace: str, name: str, selector: str
    ) -> bool:
        """Whether an online answer to this credential already showed everything this read
        would: the same named object, or an unselected (or same-selector) list of its namespace
        or of the cluster."""
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM grants WHERE component=? AND digest=? AND gvr=? AND ("
                "(name='' AND namespace IN (?, '') AND selector IN (?, '')) "
                "OR (name<>'' AND name=? AND namespace=? AND selector=?)) LIMIT 1",
                (component, digest, gvr, namespace, selector, name, namespace, selector),
            )
            .fetchone()
        )
        return row is not None

    def has_credential(self, component: str, digest: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM credentials WHERE component = ? AND digest = ?", (component, digest)
            )
            .fetchone()
        )
        return row is not None

    # --- writes -------------------------------------------------------------------------------
    def list_rv(self, component: str, gvr: str, scope: str, selector: str) -> str | None:
        row = (
            self._conn()
            .execute(
                "SELECT rv FROM lists WHERE component=? AND gvr=? AND scope=? AND selector=?",
                (component, gvr, scope, selector),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def replace_list(
        self,
        component: str,
        gvr: str,
        scope: str,
        selector: str,
        *,
        rv: str,
        kind: str,
        api_version: str,
        rows: Sequence[ObjectRow],
    ) -> None:
        """Make ``rows`` the whole content of one list key, atomically (resync)."""
        conn = self._conn()
        key = (component, gvr, scope, selector)
        with _transaction(conn):
            conn.execute(
                "DELETE FROM objects WHERE component=? AND gvr=? AND scope=? AND selector=?", key
            )
            conn.executemany(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?)",
                [(*key, r.namespace, r.name, r.rv, r.labels, r.body) for r in rows],
            )
            conn.execute(
                "INSERT OR REPLACE INTO lists VALUES (?,?,?,?,?,?,?,?)",
                (*key, rv, kind, api_version, time.time()),
            )
            if not selector:
                # A full list also proves which single-object GET answers are gone upstream.
                names = {(r.namespace, r.name) for r in rows}
                stale = [
                    (ns, name)
                    for ns, name in conn.execute(
                        "SELECT namespace, name FROM objects WHERE component=? AND gvr=? "
                        "AND selector=? AND (?='' OR namespace=?)",
                        (component, gvr, GET_SELECTOR, scope, scope),
                    )
                    if (ns, name) not in names
                ]
                conn.executemany(
                    "DELETE FROM objects WHERE component=? AND gvr=? AND scope=? AND selector=? "
                    "AND namespace=? AND name=?",
                    [(component, gvr, ns, GET_SELECTOR, ns, name) for ns, name in stale],
                )

    def apply_watch(
        self,
        component: str,
        gvr: str,
        scope: str,
        selector: str,
        *,
        changes: Iterable[WatchChange],
        rv: str | None,
    ) -> None:
        """Apply recorded watch events to one list key and advance its resourceVersion."""
        conn = self._conn()
        key = (component, gvr, scope, selector)
        with _transaction(conn):
            for change in changes:
                row = change.row
                if change.type == "DELETED":
                    conn.execute(
                        "DELETE FROM objects WHERE component=? AND gvr=? AND scope=? "
                        "AND selector=? AND namespace=? AND name=?",
                        (*key, row.namespace, row.name),
                    )
                    if not selector:
                        conn.execute(
                            "DELETE FROM objects WHERE component=? AND gvr=? AND selector=? "
                            "AND namespace=? AND name=?",
                            (component, gvr, GET_SELECTOR, row.namespace, row.name),
                        )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?)",
                        (*key, row.namespace, row.name, row.rv, row.labels, row.body),
                    )
            if rv is not None:
                conn.execute(
                    "UPDATE lists SET rv=?, updated=? WHERE component=? AND gvr=? AND scope=? "
                    "AND selector=?",
                    (rv, time.time(), *key),
                )

    def put_object(self, component: str, gvr: str, row: ObjectRow) -> None:
        """Record a single-object GET answer."""
        key = (component, gvr, row.namespace, GET_SELECTOR)
        self._conn().execute(
            "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?)",
            (*key, row.namespace, row.name, row.rv, row.labels, row.body),
        )

    def forget_object(self, component: str, gvr: str, namespace: str, name: str) -> None:
        """The upstream said 404: no recorded copy of this object may be served any more."""
        self._conn().execute(
            "DELETE FROM objects WHERE component=? AND gvr=? AND namespace=? AND name=?",
            (component, gvr, namespace, name),
        )

    def put_raw(self, component: str, key: str, response: RawResponse) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO raw VALUES (?,?,?,?,?,?)",
            (component, key, response.status, response.content_type, response.body, time.time()),
        )

    def expire(self, older_than: float) -> int:
        """Forget lists and raw answers not refreshed since ``older_than`` (a Unix time), with
        their objects: keys no client has asked for in a long time. Call only while online."""
        conn = self._conn()
        with _transaction(conn):
            stale = conn.execute(
                "SELECT component, gvr, scope, selector FROM lists WHERE updated < ?",
                (older_than,),
            ).fetchall()
            for key in stale:
                conn.execute(
                    "DELETE FROM objects WHERE component=? AND gvr=? AND scope=? AND selector=?",
                    key,
                )
                conn.execute(
                    "DELETE FROM lists WHERE component=? AND gvr=? AND scope=? AND selector=?", key
                )
            raw = conn.execute("DELETE FROM raw WHERE updated < ?", (older_than,)).rowcount
        return len(stale) + raw

    # --- reads --------------------------------------------------------------------------------
    def get_raw(self, component: str, key: str) -> RawResponse | None:
        row = (
            self._conn()
            .execute(
                "SELECT status, content_type, body FROM raw WHERE component=? AND key=?",
                (component, key),
            )
            .fetchone()
        )
        return None if row is None else RawResponse(int(row[0]), str(row[1]), bytes(row[2]))

    def has_raw_path(self, component: str, path: str) -> bool:
        """Whether some raw answer (e.g. a server-side table) was recorded for this path."""
        prefix = f"{path}?"
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM raw WHERE component=? AND substr(key, 1, ?)=? LIMIT 1",
                (component, len(prefix), prefix),
            )
            .fetchone()
        )
        return row is not None

    def find_list(
        self, component: str, gvr: str, namespace: str, selector: str
    ) -> ListRecord | None:
        """The recorded list that can answer a LIST of (namespace, selector), best first:
        the exact key, the same selector cluster-wide, then an unselected list of the namespace
        or of the cluster (filtered by the caller)."""
        candidates = [(namespace, selector), ("", selector), (namespace, ""), ("", "")]
        conn = self._conn()
        seen: set[tuple[str, str]] = set()
        for scope, sel in candidates:
            if (scope, sel) in seen:
                continue
            seen.add((scope, sel))
            row = conn.execute(
                "SELECT rv, kind, api_version FROM lists WHERE component=? AND gvr=? AND scope=? "
                "AND selector=?",
                (component, gvr, scope, sel),
            ).fetchone()
            if row is not None:
                return ListRecord(scope, sel, str(row[0]), str(row[1]), str(row[2]))
        return None

    def list_objects(
        self, component: str, gvr: str, scope: str, selector: str, namespace: str
    ) -> list[StoredObject]:
        """Objects of one list key, ordered by (namespace, name), optionally one namespace."""
        rows = self._conn().execute(
            "SELECT namespace, name, labels, body FROM objects WHERE component=? AND gvr=? "
            "AND scope=? AND selector=? AND (?='' OR namespace=?) ORDER BY namespace, name",
            (component, gvr, scope, selector, namespace, namespace),
        )
        return [StoredObject(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def get_object(self, component: str, gvr: str, namespace: str, name: str) -> bytes | None:
        """The most recently recorded copy of one object, from any list or GET of the component."""
        row = (
            self._conn()
            .execute(
                "SELECT body FROM objects WHERE component=? AND gvr=? AND namespace=? AND name=? "
                "ORDER BY rowid DESC LIMIT 1",
                (component, gvr, namespace, name),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def knows_resource(self, gvr: str) -> bool:
        """Whether any component ever recorded this resource (else offline answers 404)."""
        conn = self._conn()
        return (
            conn.execute("SELECT 1 FROM lists WHERE gvr=? LIMIT 1", (gvr,)).fetchone() is not None
            or conn.execute("SELECT 1 FROM objects WHERE gvr=? LIMIT 1", (gvr,)).fetchone()
            is not None
        )

    def knows_component(self, component: str) -> bool:
        conn = self._conn()
        return (
            conn.execute(
                "SELECT 1 FROM credentials WHERE component=? LIMIT 1", (component,)
            ).fetchone()
            is not None
        )

    def stats(self) -> tuple[int, int]:
        """(objects stored, bytes on disk including the WAL)."""
        conn = self._conn()
        count = int(conn.execute("SELECT COUNT(*) FROM objects").fetchone()[0])
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return count, size


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
