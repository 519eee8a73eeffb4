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
random salt, together with the exact scope of each read the upstream answered them (grants).
Lists and raw answers nothing refreshed for a long time can be expired while online.

Integrity (:mod:`._integrity`): every row carries an xxh3 checksum of the fields that decide what
is served and to whom, verified before the row is used. A damaged row is dropped (with the list
it belonged to, which is no longer whole), logged once and counted, never served. A store file
found empty or cut short, or unreadable, is reported (log, ``edgecache_hub_store_problems``,
``/readyz``) and set aside rather than silently used as an empty or smaller store.

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

from edgecache.hub._integrity import file_problem, row_checksum
from edgecache.metrics import HUB_STORE_PROBLEMS
from edgecache.sqlitefiles import give_rowids

__all__ = [
    "GET_SELECTOR",
    "STORE_FORMAT",
    "DamagedRecordError",
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
#: 0/1: grants per (resource, namespace). 2: grants per exact read scope. 3: row checksums.
#: 4: raw answers in a table with rowids.
STORE_FORMAT = 4

# With rowids, its key in an index of its own: raw answers include OpenAPI documents of
# megabytes, and in a WITHOUT ROWID table a look-up that meets a row too large for its page
# reads the whole row to compare keys (a 400-byte discovery answer next to them took 88 us
# to find, 12 us in a table with rowids).
_RAW_TABLE = """CREATE TABLE IF NOT EXISTS raw (
    component TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL,
    content_type TEXT NOT NULL, body BLOB NOT NULL, updated REAL NOT NULL,
    checksum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (component, key)
);"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lists (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    rv TEXT NOT NULL, kind TEXT NOT NULL, api_version TEXT NOT NULL, updated REAL NOT NULL,
    checksum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (component, gvr, scope, selector)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    component TEXT NOT NULL, gvr TEXT NOT NULL, scope TEXT NOT NULL, selector TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, rv TEXT NOT NULL, labels TEXT NOT NULL,
    body BLOB NOT NULL, checksum INTEGER NOT NULL DEFAULT 0,
    UNIQUE (component, gvr, scope, selector, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_name ON objects (component, gvr, namespace, name);
{_RAW_TABLE}
CREATE TABLE IF NOT EXISTS credentials (
    component TEXT NOT NULL, digest TEXT NOT NULL, checksum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (component, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    component TEXT NOT NULL, digest TEXT NOT NULL, gvr TEXT NOT NULL, namespace TEXT NOT NULL,
    name TEXT NOT NULL, selector TEXT NOT NULL, checksum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (component, digest, gvr, namespace, name, selector)
) WITHOUT ROWID;
"""

#: Per table: the columns a row's checksum covers, in order, and the primary key that
#: identifies a row to drop (objects: its rowid).
_CHECKED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "objects": (
        ("component", "gvr", "scope", "selector", "namespace", "name", "rv", "labels", "body"),
        ("rowid",),
    ),
    "lists": (
        ("component", "gvr", "scope", "selector", "rv", "kind", "api_version"),
        ("component", "gvr", "scope", "selector"),
    ),
    "raw": (
        ("component", "key", "status", "content_type", "body"),
        ("component", "key"),
    ),
    "credentials": (("component", "digest"), ("component", "digest")),
    "grants": (
        ("component", "digest", "gvr", "namespace", "name", "selector"),
        ("component", "digest", "gvr", "namespace", "name", "selector"),
    ),
}


class DamagedRecordError(Exception):
    """A recorded list lost a row to damage: it was dropped; look for another answer."""


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
        #: Damage found when the store was opened (empty, truncated or unreadable file), as
        #: one line each; the hub reports them on /readyz.
        self.problems: list[str] = []
        #: Rows dropped because they failed their checksum, since the store was opened.
        self.damaged_rows = 0
        self._reported: set[tuple[str, tuple[object, ...]]] = set()
        self._reported_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def open(cls, cache_dir: Path) -> HubStore:
        """Open (creating if needed) the store in ``cache_dir``. A file found empty, cut short
        or unreadable is reported (``problems``, log, metric) and set aside, and a fresh store
        starts in its place."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / "hub.sqlite"
        problems: list[str] = []
        found = file_problem(path)
        if found is not None:
            kind, message = found
            problems.append(cls._set_aside(path, kind, message))
        store = cls(path)
        try:
            store._initialise()
        except sqlite3.DatabaseError as exc:
            store.close()
            problems.append(
                cls._set_aside(path, "unreadable_file", f"{path} is unreadable ({exc})")
            )
            store = cls(path)
            store._initialise()
        store.problems = problems
        return store

    @staticmethod
    def _set_aside(path: Path, kind: str, message: str) -> str:
        """Move a damaged store file (and its WAL) aside, keeping it for a post-mortem."""
        HUB_STORE_PROBLEMS.labels(kind=kind).inc()
        label = {"unreadable_file": "corrupt"}.get(kind, kind.removesuffix("_file"))
        aside = path.with_name(f"{path.name}.{label}-{int(time.time())}")
        moved = False
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
                moved = moved or suffix == ""
        report = f"{message}; moved to {aside.name}" if moved else message
        log.error("hub store: %s; starting a fresh store", report)
        return report

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
            existing.discard("grants")
        if version < 3:
            self._add_checksums(conn, existing)
        if version < 4:
            give_rowids(conn, "raw", _RAW_TABLE)

    def _add_checksums(self, conn: sqlite3.Connection, existing: set[str]) -> None:
        """Format 3: a checksum column on every table, computed over what the rows hold now
        (a store of an older format has nothing to verify it against)."""
        with _transaction(conn):
            for table, (covered, key) in _CHECKED.items():
                if table not in existing:
                    continue
                columns = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
                if "checksum" not in columns:
                    conn.execute(
                        f"ALTER TABLE {table} ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0"
                    )
                rows = conn.execute(f"SELECT {', '.join(key + covered)} FROM {table}").fetchall()
                conn.executemany(
                    f"UPDATE {table} SET checksum=? WHERE " + " AND ".join(f"{k}=?" for k in key),
                    [(row_checksum(*row[len(key) :]), *row[: len(key)]) for row in rows],
                )
        log.info("hub store %s: checksums added (format %d)", self.path, STORE_FORMAT)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Each connection is used by its own thread only; check_same_thread=False lets
            # close() really close them all (else the WAL outlives the store until GC).
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            # Text that a flipped bit made invalid UTF-8 must reach the checksum, not raise.
            conn.text_factory = lambda data: data.decode("utf-8", "surrogateescape")
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
        conn.execute(
            "INSERT OR REPLACE INTO credentials VALUES (?, ?, ?)",
            (component, digest, row_checksum(component, digest)),
        )

    def add_grant(
        self, component: str, digest: str, gvr: str, namespace: str, name: str, selector: str
    ) -> None:
        """The upstream answered this credential's read of exactly this scope (see
        ``RequestInfo.read_scope``: one named object, or a selector in a namespace or, with
        namespace "", cluster-wide) with success while online."""
        fields = (component, digest, gvr, namespace, name, selector)
        self._conn().execute(
            "INSERT OR REPLACE INTO grants VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*fields, row_checksum(*fields)),
        )

    def has_grant(
        self, component: str, digest: str, gvr: str, namespace: str, name: str, selector: str
    ) -> bool:
        """Whether an online answer to this credential already showed everything this read
        would: the same named object, or an unselected (or same-selector) list of its namespace
        or of the cluster."""
        rows = self._conn().execute(
            "SELECT component, digest, gvr, namespace, name, selector, checksum FROM grants "
            "WHERE component=? AND digest=? AND gvr=? AND ("
            "(name='' AND namespace IN (?, '') AND selector IN (?, '')) "
            "OR (name<>'' AND name=? AND namespace=? AND selector=?))",
            (component, digest, gvr, namespace, selector, name, namespace, selector),
        )
        return any(self._intact("grants", row[:-1], row[-1], key=row[:-1]) for row in rows)

    def has_credential(self, component: str, digest: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT checksum FROM credentials WHERE component = ? AND digest = ?",
                (component, digest),
            )
            .fetchone()
        )
        fields = (component, digest)
        return row is not None and self._intact("credentials", fields, row[0], key=fields)

    # --- integrity ----------------------------------------------------------------------------
    def _intact(
        self,
        table: str,
        fields: Sequence[str | bytes | int],
        checksum: int,
        *,
        key: Sequence[object],
        list_key: Sequence[object] | None = None,
    ) -> bool:
        """Whether a row read back is the one written; a damaged one is dropped (with the
        list it made incomplete, ``list_key``), logged once and counted."""
        if row_checksum(*fields) == checksum:
            return True
        report = (table, tuple(key))
        with self._reported_lock:
            first = report not in self._reported
            self._reported.add(report)
        if first:
            self.damaged_rows += 1
            HUB_STORE_PROBLEMS.labels(kind="damaged_row").inc()
            log.error(
                "hub store %s: a %s record failed its checksum (disk or file damage); dropped, "
                "not served (key %r)",
                self.path,
                table,
                tuple(key),
            )
            with contextlib.suppress(RuntimeError):  # the store is closing
                self._writer.submit(self._drop, table, tuple(key), list_key)
        return False

    def _drop(self, table: str, key: tuple[object, ...], list_key: Sequence[object] | None) -> None:
        conn = self._conn()
        columns = _CHECKED[table][1]
        with _transaction(conn):
            conn.execute(
                f"DELETE FROM {table} WHERE " + " AND ".join(f"{c}=?" for c in columns), key
            )
            if list_key is not None and list_key[3] != GET_SELECTOR:
                # The list lost an object: it no longer says what the upstream answered.
                conn.execute(
                    "DELETE FROM lists WHERE component=? AND gvr=? AND scope=? AND selector=?",
                    tuple(list_key),
                )

    # --- writes -------------------------------------------------------------------------------
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
        """Make ``rows`` the whole content of one list key, atomically (resync). A list older
        than the one recorded (a slow LIST of one client finishing after the watch events of
        another were recorded) is not recorded: the newer snapshot stays."""
        conn = self._conn()
        key = (component, gvr, scope, selector)
        with _transaction(conn):
            current = conn.execute(
                "SELECT rv, updated FROM lists WHERE component=? AND gvr=? AND scope=? "
                "AND selector=?",
                key,
            ).fetchone()
            if (
                current is not None
                and _older(rv, str(current[0]))
                and time.time() - float(current[1]) < _REORDER_WINDOW_SECONDS
            ):
                return
            conn.execute(
                "DELETE FROM objects WHERE component=? AND gvr=? AND scope=? AND selector=?", key
            )
            conn.executemany(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?,?)",
                [_object_values(key, r) for r in rows],
            )
            conn.execute(
                "INSERT OR REPLACE INTO lists VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    *key,
                    rv,
                    kind,
                    api_version,
                    time.time(),
                    row_checksum(*key, rv, kind, api_version),
                ),
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
        """Apply recorded watch events to one list key and advance its resourceVersion.
        Events the recorded list already contains (at or before its resourceVersion: a watch
        from an older version than a list recorded meanwhile) are skipped, and the list's
        resourceVersion never goes back, so the list stays the server's state at it."""
        conn = self._conn()
        key = (component, gvr, scope, selector)
        with _transaction(conn):
            listed = conn.execute(
                "SELECT rv FROM lists WHERE component=? AND gvr=? AND scope=? AND selector=?", key
            ).fetchone()
            list_rv = str(listed[0]) if listed is not None else ""
            if rv is not None and _older(rv, list_rv):
                rv = None
            for change in changes:
                row = change.row
                if _older(row.rv, list_rv) or (row.rv == list_rv and row.rv.isdigit()):
                    continue  # at or before the list's resourceVersion: already in it
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
                        "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?,?)",
                        _object_values(key, row),
                    )
            if rv is not None:
                listed = conn.execute(
                    "SELECT kind, api_version FROM lists WHERE component=? AND gvr=? AND scope=? "
                    "AND selector=?",
                    key,
                ).fetchone()
                if listed is not None:
                    kind, api_version = str(listed[0]), str(listed[1])
                    conn.execute(
                        "UPDATE lists SET rv=?, updated=?, checksum=? WHERE component=? "
                        "AND gvr=? AND scope=? AND selector=?",
                        (rv, time.time(), row_checksum(*key, rv, kind, api_version), *key),
                    )

    def put_object(self, component: str, gvr: str, row: ObjectRow) -> None:
        """Record a single-object GET answer."""
        key = (component, gvr, row.namespace, GET_SELECTOR)
        self._conn().execute(
            "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?,?)", _object_values(key, row)
        )

    def forget_object(self, component: str, gvr: str, namespace: str, name: str) -> None:
        """The upstream said 404: no recorded copy of this object may be served any more."""
        self._conn().execute(
            "DELETE FROM objects WHERE component=? AND gvr=? AND namespace=? AND name=?",
            (component, gvr, namespace, name),
        )

    def put_raw(self, component: str, key: str, response: RawResponse) -> None:
        fields = (component, key, response.status, response.content_type, response.body)
        self._conn().execute(
            "INSERT OR REPLACE INTO raw VALUES (?,?,?,?,?,?,?)",
            (*fields, time.time(), row_checksum(*fields)),
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
                "SELECT status, content_type, body, checksum FROM raw WHERE component=? AND key=?",
                (component, key),
            )
            .fetchone()
        )
        if row is None:
            return None
        status, content_type, body = row[0], row[1], bytes(row[2])
        fields = (component, key, status, content_type, body)
        if not self._intact("raw", fields, row[3], key=(component, key)):
            return None
        return RawResponse(int(status), str(content_type), body)

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
        self,
        component: str,
        gvr: str,
        namespace: str,
        selector: str,
        *,
        skip: Iterable[tuple[str, str]] = (),
    ) -> ListRecord | None:
        """The recorded list that can answer a LIST of (namespace, selector), best first:
        the exact key, the same selector cluster-wide, then an unselected list of the namespace
        or of the cluster (filtered by the caller)."""
        candidates = [(namespace, selector), ("", selector), (namespace, ""), ("", "")]
        conn = self._conn()
        seen: set[tuple[str, str]] = set(skip)
        for scope, sel in candidates:
            if (scope, sel) in seen:
                continue
            seen.add((scope, sel))
            row = conn.execute(
                "SELECT rv, kind, api_version, checksum FROM lists WHERE component=? AND gvr=? "
                "AND scope=? AND selector=?",
                (component, gvr, scope, sel),
            ).fetchone()
            if row is None:
                continue
            list_key = (component, gvr, scope, sel)
            if self._intact("lists", (*list_key, *row[:3]), row[3], key=list_key):
                return ListRecord(scope, sel, str(row[0]), str(row[1]), str(row[2]))
        return None

    def select_list(
        self, component: str, gvr: str, namespace: str, selector: str
    ) -> tuple[ListRecord, list[StoredObject]] | None:
        """The best recorded list for a LIST of (namespace, selector) with its objects (of
        ``namespace`` only, when given), read in one snapshot, so a list and its objects are
        never seen half-dropped. A candidate that lost objects to damage is passed over (it is
        being dropped) for the next one, as :meth:`find_list` orders them."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            skipped: set[tuple[str, str]] = set()
            for _ in range(4):
                record = self.find_list(component, gvr, namespace, selector, skip=skipped)
                if record is None:
                    return None
                try:
                    objects = self.list_objects(
                        component, gvr, record.scope, record.selector, namespace
                    )
                except DamagedRecordError:
                    skipped.add((record.scope, record.selector))
                    continue
                return record, objects
            return None
        finally:
            conn.execute("COMMIT")

    def list_objects(
        self, component: str, gvr: str, scope: str, selector: str, namespace: str
    ) -> list[StoredObject]:
        """Objects of one list key, ordered by (namespace, name), optionally one namespace.

        Raises :class:`DamagedRecordError` when a row fails its checksum: the row and the list
        are dropped, and a list with a hole must not be served as the whole answer.
        """
        list_key = (component, gvr, scope, selector)
        rows = self._conn().execute(
            "SELECT rowid, namespace, name, rv, labels, body, checksum FROM objects "
            "WHERE component=? AND gvr=? AND scope=? AND selector=? AND (?='' OR namespace=?) "
            "ORDER BY namespace, name",
            (*list_key, namespace, namespace),
        )
        result: list[StoredObject] = []
        damaged = False
        for rowid, ns, name, rv, labels, body, checksum in rows:
            body = bytes(body)
            fields = (*list_key, ns, name, rv, labels, body)
            if self._intact("objects", fields, checksum, key=(rowid,), list_key=list_key):
                result.append(StoredObject(ns, name, labels, body))
            else:
                damaged = True
        if damaged:
            raise DamagedRecordError(f"a recorded list of {gvr} lost objects to damage")
        return result

    def get_object(
        self, component: str | None, gvr: str, namespace: str, name: str
    ) -> bytes | None:
        """The most recently recorded intact copy of one object, from any list or GET of the
        component (``None``: of any component, for what is not served but consulted, such as a
        CRD's selectable fields). Damaged copies are dropped on the way; when no intact one is
        left, :class:`DamagedRecordError` (the object was recorded: "not found" would be a lie)."""
        columns = (
            "SELECT rowid, component, scope, selector, rv, labels, body, checksum FROM objects "
        )
        order = " ORDER BY rowid DESC"
        if component is None:
            rows = self._conn().execute(
                columns + "WHERE gvr=? AND namespace=? AND name=?" + order, (gvr, namespace, name)
            )
        else:
            rows = self._conn().execute(
                columns + "WHERE component=? AND gvr=? AND namespace=? AND name=?" + order,
                (component, gvr, namespace, name),
            )
        damaged = False
        for rowid, owner, scope, selector, rv, labels, body, checksum in rows:
            body = bytes(body)
            list_key = (owner, gvr, scope, selector)
            fields = (*list_key, namespace, name, rv, labels, body)
            if self._intact("objects", fields, checksum, key=(rowid,), list_key=list_key):
                return body
            damaged = True
        if damaged:
            raise DamagedRecordError(f"every recorded copy of {gvr} {namespace}/{name} is damaged")
        return None

    def knows_resource(self, gvr: str) -> bool:
        """Whether any component ever recorded this resource (else offline answers 404)."""
        conn = self._conn()
        return (
            conn.execute("SELECT 1 FROM lists WHERE gvr=? LIMIT 1", (gvr,)).fetchone() is not None
            or conn.execute("SELECT 1 FROM objects WHERE gvr=? LIMIT 1", (gvr,)).fetchone()
            is not None
        )

    def scoped_by_namespace(self, gvr: str) -> bool | None:
        """Whether recorded objects of ``gvr`` carry a namespace (every object of a namespaced
        resource does, none of a cluster-scoped one); ``None`` when none was recorded."""
        row = (
            self._conn()
            .execute("SELECT namespace FROM objects WHERE gvr=? LIMIT 1", (gvr,))
            .fetchone()
        )
        return None if row is None else bool(row[0])

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


def _object_values(key: Sequence[str], row: ObjectRow) -> tuple[object, ...]:
    """An objects-table row (list key, identity, content, checksum) for INSERT."""
    fields: tuple[str | bytes, ...] = (*key, row.namespace, row.name, row.rv, row.labels, row.body)
    return (*fields, row_checksum(*fields))


def _older(candidate: str, current: str) -> bool:
    """Whether resourceVersion ``candidate`` certainly predates ``current``. resourceVersions
    are opaque to clients, but every Kubernetes server (etcd revisions) makes them increasing
    integers; anything else is never called older."""
    return candidate.isdigit() and current.isdigit() and int(candidate) < int(current)


#: How long a recorded list holds off an older one. Out-of-order answers are a race of
#: seconds; a server whose resourceVersions went back for good (a cluster restored from a
#: backup) is recorded again after this long.
_REORDER_WINDOW_SECONDS = 60.0


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
