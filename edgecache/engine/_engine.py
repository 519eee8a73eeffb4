"""ReadEngine: the read path of one backend through one cache directory, shared by the process.

Place in the data path::

    EdgeCacheFileSystem, EdgeCacheFile, prefetch, CLI (and later the agent and the pool)
      --> ReadEngine: plan (metadata: MetadataCache -> backend), read (blocks: TieredCache ->
          block sources -> backend), guard (health), scans, single-flight, fetch concurrency
      --> Backend (client bound to the engine's loop)

Every coroutine of the engine runs on one event loop, :attr:`ReadEngine.loop` (fsspec's I/O
thread), where the backend's client was created: a caller on another loop (zarr's async API, an
application's own loop) awaits the engine's coroutines there, so no client, session, lock or
future is ever used from a loop it was not made on. Reads of cached data need no loop at all
(:meth:`ReadEngine.read_cached`).

Read settings (block size, TTL, read-ahead) are the caller's, passed with each call; what the
engine holds is node-level and shared by every filesystem of the process on this directory and
backend. The registry (:mod:`edgecache.engine._registry`) makes one engine per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Literal, ParamSpec, TypeVar

from fsspec.asyn import get_loop

from edgecache.backends import Backend
from edgecache.buffers import filled_bytes
from edgecache.cache import BlockFetcher, BlockKey, Fetched, TieredCache
from edgecache.config import CacheSettings, QoSSettings
from edgecache.engine._health import BackendHealth, first_error_clause
from edgecache.engine._metadata import CachedInfo, MetadataCache, parent_of
from edgecache.engine._plan import ReadPlan
from edgecache.engine._qos import Priority, current_priority, link_scheduler
from edgecache.engine._scan import ScanDetector
from edgecache.engine._sources import BackendSource, BlockSource, SourceSkipped
from edgecache.engine._sparse import Pages, SparsePlanner
from edgecache.engine._store import Store
from edgecache.engine._tree import split_tree
from edgecache.errors import BackendUnavailableError, ObjectChangedError

__all__ = ["ReadEngine"]

log = logging.getLogger(__name__)

_LISTING_WAIT_SECONDS = 2.0
"""Longest wait for another process's listing of a directory before listing it too: a few
round trips of a WAN link and the parsing of a few thousand entries."""
_PLANS_KEPT = 1 << 14
"""Plans an engine remembers for the cached infos they were made from (then it starts afresh):
more than the files a warm loop over 10,000 small files opens."""

_process_pid = os.getpid()
"""This process's id, kept up to date by a fork handler: every warm read asks whether its
engine was made in this process, and ``os.getpid()`` is a system call each time."""


def _note_fork() -> None:
    global _process_pid
    _process_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork)

P = ParamSpec("P")
T = TypeVar("T")


def on_engine_loop(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make an engine coroutine run on the engine's loop whichever loop awaits it."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        engine = args[0]
        assert isinstance(engine, ReadEngine)
        loop = engine.loop
        if asyncio.get_running_loop() is loop:
            return await method(*args, **kwargs)
        future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)
        return await asyncio.wrap_future(future)

    return run


class ReadEngine:
    """Plans and reads objects of one backend through one cache directory (see module doc).

    Built by :func:`edgecache.engine.engine_for`; ``settings`` are those of the first caller and
    decide only node-level things: fetch concurrency, the backend health periods, the default
    scan-ahead.
    """

    def __init__(self, backend: Backend, store: Store, settings: CacheSettings) -> None:
        self.backend = backend
        self.store = store
        self.identity = backend.identity
        """Backend identity: part of every block and metadata key."""
        self.settings = settings
        self.health = BackendHealth(self.identity, settings.health)
        self.link = link_scheduler(
            self.identity, settings.qos if backend.remote else QoSSettings(enabled=False)
        )
        """The link's QoS scheduler (foreground first), shared by the engines on the link."""
        self.link.share_through(settings.qos.state_dir or os.path.join(store.directory, "qos"))
        self._refreshing: dict[str, asyncio.Future[Any]] = {}
        self.scans = ScanDetector(settings.read.scan_ahead_files)
        self._dir_misses: dict[str, int] = {}
        self._listing_flights: dict[str, asyncio.Future[list[CachedInfo]]] = {}
        self._backend_source = BackendSource(
            self,
            concurrency=settings.read.fetch_concurrency,
            background_concurrency=self.link.settings.background_fetches,
        )
        self._sources: list[BlockSource] = [self._backend_source]
        self._relays: list[BlockSource] = []
        self.sparse = SparsePlanner()
        """Which small misses fetch pages instead of whole blocks."""
        self._trees: dict[str, float] = {}
        """Directory -> when its whole tree was listed flat (monotonic seconds)."""
        self._plans: dict[tuple[str, int], tuple[CachedInfo, ReadPlan]] = {}
        """(path, block size) -> the plan made from that cached info (reused while it is the
        info the metadata cache holds: a warm open builds no plan)."""
        self._pid = _process_pid

    # --- what it runs on -----------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every coroutine of the engine (and of its backend client) runs on."""
        loop: asyncio.AbstractEventLoop = get_loop()
        return loop

    @property
    def closed(self) -> bool:
        """True once the store was closed, or in a process forked after the engine was made
        (the registry then builds a new one)."""
        return self.store.closed or self._pid != _process_pid

    @property
    def blocks(self) -> TieredCache:
        """The directory's tiered block cache."""
        return self.store.blocks

    @property
    def metadata(self) -> MetadataCache:
        """The directory's metadata cache."""
        return self.store.metadata

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run an engine coroutine to its end from synchronous code (not from the loop)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def add_source(self, source: BlockSource) -> None:
        """Ask ``source`` for missing blocks before the sources added earlier and the backend."""
        self._sources.insert(0, source)

    def add_relay(self, source: BlockSource) -> None:
        """Ask ``source`` for a missing block before the cache's single-flight and its
        cross-process block lock (then the sources, if it skips): for a source that may store
        the block in this very cache directory itself (the node's agent serving a pod's reader
        that mounts the agent's cache directory), which would otherwise wait for the lock its
        asker holds."""
        self._relays.append(source)

    # --- the guard: one place for "backend unreachable" ----------------------------------------
    @contextlib.asynccontextmanager
    async def guard(
        self, what: str, *, problem: str | None = None, has_cached_answer: bool = False
    ) -> AsyncIterator[None]:
        """Around one backend request for ``what`` (e.g. "block 3 of bkt/x"). Offline, it goes
        ahead only if a probe answers (one is run if the last is old enough, see
        :class:`BackendHealth`), else fails at once; an "unreachable" error or a timeout takes
        the backend offline for the engine. Either way the BackendUnavailableError says what
        was asked (``problem``, default "``what`` is not cached"), since when the backend is
        unreachable and the first error, once. Other errors pass unchanged.

        ``has_cached_answer``: the caller serves what the cache knows if the request fails (a
        revalidation). Then the request also stops, with that error, as soon as another
        request takes the backend offline: on a hung link it would otherwise wait out its own
        read timeout after the link was known to be down."""
        problem = problem or f"{what} is not cached"
        if not await self.health.usable(self.backend.probe):
            raise self.unavailable(problem)
        with self._stopped_when_offline(problem) if has_cached_answer else contextlib.nullcontext():
            try:
                with self.link.request():
                    yield
            except ObjectChangedError:
                raise
            except Exception as exc:
                if not self.backend.is_unreachable(exc):
                    raise
                self.health.went_unreachable(exc, self.backend.probe)
                raise self.unavailable(problem, cause=exc) from exc

    @contextlib.contextmanager
    def _stopped_when_offline(self, problem: str) -> Iterator[None]:
        """Around a wait on the engine's loop whose caller has a cached answer to serve: when
        another request takes the backend offline meanwhile, the wait stops with the
        BackendUnavailableError for ``problem`` (the waiting task is cancelled, as
        ``asyncio.timeout`` does). A shared flight it waited on goes on for its other waiters."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        loop = asyncio.get_running_loop()
        gave_up = False
        active = True

        def give_up() -> None:  # on the loop: the wait may have ended meanwhile
            nonlocal gave_up
            if active and not gave_up:
                gave_up = True
                task.cancel()

        def went_offline() -> None:  # in the thread that found the backend unreachable
            # A loop closed under the wait took the wait with it; the request that found
            # the backend unreachable must not fail on that.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(give_up)

        stop_watching = self.health.on_offline(went_offline)
        try:
            yield
        except asyncio.CancelledError:
            if gave_up and task.uncancel() == 0:
                raise self.unavailable(problem) from None
            raise
        finally:
            active = False
            stop_watching()

    def unavailable(self, problem: str, *, cause: BaseException | None = None) -> Exception:
        """The error for ``problem`` while the backend is unreachable: one message naming what
        was asked, since when the backend is unreachable, and the first error."""
        since = self.health.offline_since
        first = self.health.last_error or (str(cause) if cause is not None else "")
        when = time.strftime(" since %H:%M:%S", time.localtime(since)) if since else ""
        detail = f" ({first_error_clause(first)})" if first else ""
        return BackendUnavailableError(
            f"{problem}: backend {self.identity} is unreachable{when}{detail}",
            retry_after_seconds=self.settings.health.recheck_after_seconds,
        )

    def _refresh_later(self, key: str, refresh: Callable[[], Awaitable[Any]]) -> None:
        """Run ``refresh`` behind the reader's back, once per ``key`` at a time: the backend is
        back from an outage but not stable yet, and the reader was given the cached answer."""
        if key in self._refreshing:
            return

        async def run() -> None:
            with contextlib.suppress(Exception):
                await refresh()

        task = self._refreshing[key] = asyncio.ensure_future(run())
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))

    def _known_while_unstable(self, path: str) -> CachedInfo | None:
        """Offline or just back from an outage: the last known info of ``path`` (refreshed in
        the background while online), so no reader of cached data waits on the link. None
        when stable, or when nothing is known (the read needs the backend)."""
        if self.health.stable:
            return None
        known = self._last_known_info(path)
        if known is not None and self.health.online:
            self._refresh_later(f"info:{path}", lambda: self._info_from_backend(path))
        return known

    async def _ask(
        self, what: str, method: str, *args: Any, has_cached_answer: bool = False, **kwargs: Any
    ) -> Any:
        async with self.guard(what, has_cached_answer=has_cached_answer):
            return await self.backend.call(method, *args, **kwargs)

    # --- metadata ------------------------------------------------------------------------------
    @on_engine_loop
    async def timestamp(self, kind: Literal["created", "modified"], path: str) -> Any:
        """``path``'s creation or modification time, from the backend (never cached: fsspec
        callers ask it to see a change)."""
        async with self.guard(path, problem=f"cannot tell the {kind} time of {path}"):
            return await self.backend.timestamp(kind, path)

    def info_cached(self, path: str, *, ttl: float) -> CachedInfo | None:
        """The info of ``path`` if cached within ``ttl`` seconds; never asks the backend."""
        return self.metadata.info(self.identity, path, max_age=ttl)

    @on_engine_loop
    async def info(self, path: str, *, ttl: float) -> CachedInfo:
        """The info of ``path``: cached within ``ttl`` seconds, else from the backend (one
        listing of its directory answers for its neighbours too); offline, the last known one.
        FileNotFoundError when missing; BackendUnavailableError when it cannot be known."""
        cached = self.metadata.info(self.identity, path, max_age=ttl)
        if cached is not None:
            return cached
        self._raise_if_known_missing(path, ttl=ttl)
        known = self._known_while_unstable(path)
        if known is not None:
            return known
        cached = await self._info_from_listing(path, ttl=ttl)
        if cached is not None:
            return cached
        try:
            return await self._info_from_backend(path)
        except BackendUnavailableError:
            known = self._last_known_info(path)
            if known is None:
                raise
            return known

    async def _info_from_backend(self, path: str) -> CachedInfo:
        known = self.metadata.info(self.identity, path, allow_stale=True)
        try:
            info = await self._ask(
                f"the info of {path}", "info", path, has_cached_answer=known is not None
            )
        except FileNotFoundError:
            self.metadata.put_missing(self.identity, path)
            raise
        return self.metadata.put_info(self.identity, path, info, self._version(info))

    def _raise_if_known_missing(self, path: str, *, ttl: float | None) -> None:
        """FileNotFoundError if ``path`` is known not to exist.

        Known means: found missing (a negative entry) since it was last seen, within ``ttl``
        seconds, or at any age offline (``ttl=None``); or, online, absent from its parent's
        listing fetched within ``ttl`` (recorded as a negative entry too, so that the answer
        holds offline later). Offline, absence from an old listing proves nothing: the object
        may have been written since, so that question is "cannot know", not "no"."""
        offline = ttl is None
        known = self.metadata.info(self.identity, path, allow_stale=True)
        gone = self.metadata.missing(self.identity, path, allow_stale=offline, max_age=ttl)
        if gone is not None and (known is None or known.fetched < gone):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)
        parent = parent_of(path)
        if offline or not parent or parent == path:
            return
        listing = self.metadata.listing(self.identity, parent, max_age=ttl)
        if listing is not None and all(e.info.get("name") != path for e in listing):
            listed = listing[0].fetched if listing else None
            self.metadata.put_missing(self.identity, path, fetched=listed)
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", path)

    def _last_known_info(self, path: str) -> CachedInfo | None:
        """Offline: the newest info of ``path`` whatever its age; FileNotFoundError if it was
        last known missing; None if nothing is known."""
        self._raise_if_known_missing(path, ttl=None)
        stale = self.metadata.info(self.identity, path, allow_stale=True)
        if stale is not None:
            return stale
        if self.metadata.listing(self.identity, path, allow_stale=True) is not None:
            # Its own info was never asked for, but it was listed: it is a directory.
            return CachedInfo({"name": path, "type": "directory", "size": 0}, "", 0.0)
        return None

    async def _info_from_listing(self, path: str, *, ttl: float) -> CachedInfo | None:
        """On the second info miss in one directory, list it: one request answers for every
        file in it, instead of a request per file (a training loop opening files one by one)."""
        parent = parent_of(path)
        if not parent or parent == path:
            return None
        misses = self._dir_misses.get(parent, 0) + 1
        self._dir_misses[parent] = misses
        if misses < 2 or self.metadata.listing(self.identity, parent, max_age=ttl) is not None:
            return None
        known = self.metadata.info(self.identity, path, allow_stale=True)
        try:
            # A revalidation (the caller serves ``known`` if the backend is unreachable).
            with (
                self._stopped_when_offline(f"the listing of {parent}")
                if known is not None
                else contextlib.nullcontext()
            ):
                await self.listing(parent, ttl=ttl)
        except (OSError, ValueError):
            return None
        self._raise_if_known_missing(path, ttl=ttl)
        return self.metadata.info(self.identity, path, max_age=ttl)

    def listing_cached(self, path: str, *, ttl: float) -> list[CachedInfo] | None:
        """The listing of directory ``path`` if cached within ``ttl`` seconds."""
        return self.metadata.listing(self.identity, path, max_age=ttl)

    @on_engine_loop
    async def listing(self, path: str, *, ttl: float) -> list[CachedInfo]:
        """The entries of directory ``path`` (cached within ``ttl``, else listed once for all
        concurrent callers); offline, the last known listing, else BackendUnavailableError."""
        entries = self.metadata.listing(self.identity, path, max_age=ttl)
        if entries is not None:
            return entries
        self._raise_if_known_missing(path, ttl=ttl)
        if not self.health.stable:
            # As for infos: offline or just back, the last known listing now, a fresh one
            # (while online) for the next reader.
            entries = self.metadata.listing(self.identity, path, allow_stale=True)
            if entries is not None:
                if self.health.online:
                    self._refresh_later(f"ls:{path}", lambda: self._list_once(path))
                return entries
        return await self._list_once(path)

    async def _list_once(self, path: str) -> list[CachedInfo]:
        """List ``path`` from the backend, one request for all concurrent callers."""
        flight = self._listing_flights.get(path)
        if flight is None:
            flight = asyncio.ensure_future(self._list_from_backend(path))
            self._listing_flights[path] = flight
            flight.add_done_callback(lambda f: self._listing_flights.pop(path, None))
            flight.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: a caller giving up must not cancel the listing the others wait for.
        return await asyncio.shield(flight)

    @on_engine_loop
    async def list_tree(self, path: str, *, ttl: float) -> bool:
        """Cache the listing of directory ``path`` and of every directory below it, from one
        flat recursive listing (an object store lists a prefix without delimiter, a thousand
        keys a request, where a walk costs a request per directory, level after level).

        ``find``/``glob`` then walk the tree from the metadata cache, and later ``ls``/``info``
        of any level are answered from it (offline too). Within ``ttl`` of the last flat
        listing nothing is asked. False when there is nothing to store (``path`` is a file,
        missing, empty) or the backend is unreachable: the caller walks the cached listings
        or level by level, which tells those cases apart.
        """
        listed = self._trees.get(path)
        if (
            listed is not None
            and time.monotonic() - listed <= ttl
            and self.metadata.listing(self.identity, path, max_age=ttl) is not None
        ):
            return True
        try:
            found = await self._ask(
                f"the tree below {path}", "find", path, withdirs=True, detail=True
            )
        except (BackendUnavailableError, FileNotFoundError):
            return False
        entries = found.values() if isinstance(found, Mapping) else found
        tree = split_tree(path, entries)
        if tree.root_file is not None or tree.listings == {tree.root: []}:
            return False
        self.metadata.put_listings(
            self.identity,
            {
                directory: [(_normal(i), self._version(i)) for i in children]
                for directory, children in tree.listings.items()
                # A directory listed by itself lately keeps that answer (and its order).
                if self.metadata.listing(self.identity, directory, max_age=ttl) is None
            },
        )
        if self.metadata.info(self.identity, path, max_age=ttl) is None:
            self.metadata.put_info(
                self.identity, path, {"name": path, "size": 0, "type": "directory"}, ""
            )
        self._trees[path] = time.monotonic()
        return True

    async def _list_from_backend(self, path: str) -> list[CachedInfo]:
        asked = time.time()
        # One listing for the processes of this cache directory: DataLoader workers opening
        # the files of one directory all want it at once, and each listing costs the store
        # (and the link) as much as the first. The wait is short: a listing that takes longer
        # (a hung link, a huge directory) must not make the others wait for it in turn.
        name = f"ls\0{self.identity}\0{path}"
        async with self.blocks.exclusive(name, wait_seconds=_LISTING_WAIT_SECONDS):
            entries = self.metadata.listing(self.identity, path, allow_stale=True)
            if entries and min(e.fetched for e in entries) >= asked:
                return entries  # another process listed it while this one waited
            return await self._list_now(path)

    async def _list_now(self, path: str) -> list[CachedInfo]:
        try:
            listing = await self._ask(
                f"the listing of {path}",
                "ls",
                path,
                detail=True,
                has_cached_answer=self._last_known_listing(path) is not None,
            )
        except FileNotFoundError:
            self.metadata.put_missing(self.identity, path)
            raise
        except BackendUnavailableError:
            entries = self._last_known_listing(path)
            if entries is not None:
                return entries
            self._raise_if_known_missing(path, ttl=None)
            raise
        return self.metadata.put_listing(
            self.identity, path, [(_normal(i), self._version(i)) for i in listing]
        )

    def _last_known_listing(self, path: str) -> list[CachedInfo] | None:
        """The newest listing of ``path`` whatever its age (a file lists as itself, as in
        fsspec); None if nothing is known."""
        entries = self.metadata.listing(self.identity, path, allow_stale=True)
        if entries is not None:
            return entries
        known = self.metadata.info(self.identity, path, allow_stale=True)
        if known is not None and known.info.get("type") != "directory":
            return [known]
        return None

    def _version(self, info: Mapping[str, Any]) -> str:
        return "" if info.get("type") == "directory" else self.backend.version(info)

    # --- planning ------------------------------------------------------------------------------
    def _plan_of(self, cached: CachedInfo, path: str, block_size: int) -> ReadPlan:
        if cached.info.get("type") == "directory":
            raise IsADirectoryError(path)
        size = int(cached.info.get("size") or 0)
        return ReadPlan(self.identity, path, cached.version, size, block_size)

    def plan_cached(self, path: str, *, block_size: int, ttl: float) -> ReadPlan | None:
        """A plan from cached metadata (within ``ttl``), or None; IsADirectoryError for a
        directory."""
        cached = self.info_cached(path, ttl=ttl)
        if cached is None:
            return None
        plans = self._plans
        known = plans.get((path, block_size))
        if known is not None and known[0] is cached:
            return known[1]
        plan = self._plan_of(cached, path, block_size)
        if len(plans) >= _PLANS_KEPT:
            plans.clear()
        plans[(path, block_size)] = (cached, plan)
        return plan

    @on_engine_loop
    async def plan(self, path: str, *, block_size: int, ttl: float) -> ReadPlan:
        """Plan reads of the current version of ``path`` (see :meth:`info` for errors)."""
        return self._plan_of(await self.info(path, ttl=ttl), path, block_size)

    @on_engine_loop
    async def replan(self, plan: ReadPlan, *, ttl: float) -> ReadPlan:
        """The object changed under ``plan``: forget what was cached about it (its info and
        the listings that hold it) and plan its current version."""
        self.metadata.invalidate(self.identity, plan.path)
        return await self.plan(plan.path, block_size=plan.block_size, ttl=ttl)

    async def _plan_for(
        self,
        path: str,
        ranges: Sequence[tuple[int | None, int | None]],
        *,
        block_size: int,
        ttl: float,
    ) -> ReadPlan:
        """A plan of ``path`` for reading ``ranges``: from cached metadata if fresh; else, when
        nothing at all is known of the object and the backend's reads tell its info, from the
        first reads themselves (fetched at once, without a version, and kept in the cache
        under the version they report), so a cold read costs no info request before its GET,
        as with the store's own client; else from the backend's info (:meth:`plan`)."""
        plan = self.plan_cached(path, block_size=block_size, ttl=ttl)
        if plan is not None:
            return plan
        spans = self.sparse.first_reads(ranges, block_size=block_size)
        if (
            not spans
            or not self.backend.reads_tell_info
            or not self.health.stable
            or self.metadata.info(self.identity, path, allow_stale=True) is not None
            or self.metadata.missing(self.identity, path, allow_stale=True) is not None
        ):
            return await self.plan(path, block_size=block_size, ttl=ttl)
        self._raise_if_known_missing(path, ttl=ttl)
        answers = await asyncio.gather(
            *(
                self._backend_source.fetch_unplanned(
                    path, lo, hi, counted=hi - lo < block_size or lo % block_size != 0
                )
                for lo, hi, _ in spans
            ),
            return_exceptions=True,
        )
        read = [
            (span[0], span[2], *answer)
            for span, answer in zip(spans, answers, strict=True)
            if not isinstance(answer, BaseException)
        ]
        if not read or read[0][3].get("type", "file") != "file":
            # Missing, a directory, out of range, unreachable: the info says which, as it
            # does for every other read.
            return await self.plan(path, block_size=block_size, ttl=ttl)
        info = dict(read[0][3])
        plan = self._plan_of(
            self.metadata.put_info(self.identity, path, info, self._version(info)),
            path,
            block_size,
        )
        for start, page_size, data, their_info in read:
            if self._version(their_info) != plan.version:
                continue  # the object changed between the reads: read again with a version
            index = plan.block_of(start)
            if start == plan.block_start(index) and len(data) == plan.block_length(index):
                await self.blocks.get(
                    plan.key(index), _given(data), expected_size=plan.block_length(index)
                )
            elif page_size and start % page_size == 0 and self.sparse.paged(block_size):
                self._keep_pages(plan, page_size, start, data)
        return plan

    @on_engine_loop
    async def latest(
        self,
        path: str,
        use: Callable[[ReadPlan], Awaitable[T]],
        *,
        block_size: int,
        ttl: float,
        first_reads: Sequence[tuple[int | None, int | None]] = (),
    ) -> T:
        """``await use(plan)`` on the current version of ``path``; if the object changes under
        it (:class:`ObjectChangedError`), once more on the new version. ``use`` must not have
        handed out bytes of the first version (it is a whole read, a whole copy).
        ``first_reads``: the ranges ``use`` starts with, which a cold object's plan may be
        learnt from (:meth:`_plan_for`)."""
        plan = await self._plan_for(path, first_reads, block_size=block_size, ttl=ttl)
        try:
            return await use(plan)
        except ObjectChangedError:
            plan = await self.replan(plan, ttl=ttl)
            return await use(plan)

    # --- reading -------------------------------------------------------------------------------
    async def _block(self, plan: ReadPlan, index: int) -> bytes:
        key, length = plan.key(index), plan.block_length(index)
        fetch: BlockFetcher = functools.partial(self._from_sources, plan, index)
        if current_priority() is Priority.BACKGROUND and not self.blocks.holds(key):
            # Admitted before single-flight and the cross-process block lock: a reader never
            # joins a flight that waits for its turn behind foreground.
            async with self.link.background_block(length):
                fetch = await self._relayed(plan, index, fetch)
                return await self.blocks.get(key, fetch, expected_size=length)
        fetch = await self._relayed(plan, index, fetch)
        return await self.blocks.get(key, fetch, expected_size=length)

    async def _relayed(self, plan: ReadPlan, index: int, fetch: BlockFetcher) -> BlockFetcher:
        """``fetch``, or the block from a relay (:meth:`add_relay`) when one serves it, asked
        outside single-flight and the block lock; a tier that holds the block needs none."""
        if not self._relays or self.blocks.holds(plan.key(index)):
            return fetch
        for relay in self._relays:
            try:
                with self.link.off_link():
                    data = await relay.fetch(plan, index)
            except SourceSkipped:
                continue
            return _given(Fetched(data, relay.name))
        return fetch

    async def _from_sources(self, plan: ReadPlan, index: int) -> bytes | Fetched:
        for source in self._sources:
            try:
                if source is self._backend_source:
                    data = await source.fetch(plan, index)
                else:
                    with self.link.off_link():
                        data = await source.fetch(plan, index)
            except SourceSkipped:
                continue
            except BackendUnavailableError:
                if source is not self._backend_source:
                    raise
                held = await self._held_elsewhere(plan, index)
                if held is None:
                    raise
                return held
            return data if source is self._backend_source else Fetched(data, source.name)
        raise AssertionError("the backend source never skips")

    async def _held_elsewhere(self, plan: ReadPlan, index: int) -> Fetched | None:
        """The backend is unreachable: the block from a source that holds it (a pool peer
        that is not its owner), for sources that can say (``fetch_held``); else None."""
        for source in self._sources:
            fetch_held = getattr(source, "fetch_held", None)
            if fetch_held is None:
                continue
            try:
                return Fetched(await fetch_held(plan, index), source.name)
            except SourceSkipped:
                continue
        return None

    @on_engine_loop
    async def block(self, plan: ReadPlan, index: int) -> bytes:
        """The whole block ``index`` of ``plan``: from a tier, else from the sources (once per
        block across the process), then cached. For the pool's block server, which hands out
        whole blocks; readers use :meth:`read`."""
        return await self._block(plan, index)

    @on_engine_loop
    async def read(self, plan: ReadPlan, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the planned version: cached blocks from the tiers, the
        others fetched (in parallel, once per block across the process). A small part of a
        block no tier holds is fetched as the pages it covers, unless the reads of the object
        show sequential or dense use (:class:`~edgecache.engine._sparse.SparsePlanner`).
        ObjectChangedError if the object is no longer at that version."""
        end = min(end, plan.size)
        if start >= end:
            return b""
        sequential = self.sparse.read(plan.path, plan.version, start, end)
        parts = []
        for i in plan.blocks(start, end):
            first = plan.block_start(i)
            stop = first + plan.block_length(i)
            lo, hi = max(start, first), min(end, stop)
            pages = None
            if (lo, hi) != (first, stop) and not self.blocks.holds(plan.key(i)):
                cached = (
                    self._pages_cached(plan, lo, hi) if self.sparse.paged(plan.block_size) else None
                )
                if cached is not None:
                    parts.append(_ready(cached))
                    continue
                pages = self.sparse.pages(
                    plan.path,
                    plan.version,
                    i,
                    lo,
                    hi,
                    block_size=plan.block_size,
                    sequential=sequential,
                )
            if pages is None:
                parts.append(self._block_part(plan, i, lo - first, hi - first))
            else:
                parts.append(self._pages_part(plan, pages, lo, hi))
        if len(parts) == 1:
            # Awaited here, not as a task of a gather: a small read's bytes reach the reader
            # without the task switches (a few hundred microseconds a read on a busy loop).
            return await parts[0]
        return b"".join(await asyncio.gather(*parts))

    async def _block_part(self, plan: ReadPlan, index: int, lo: int, hi: int) -> bytes:
        block = await self._block(plan, index)
        return block if (lo, hi) == (0, len(block)) else block[lo:hi]

    # --- pages: small parts of blocks, for sparse reads ----------------------------------------
    def _page_plan(self, plan: ReadPlan, page_size: int) -> ReadPlan:
        return dataclasses.replace(plan, block_size=page_size)

    def _pages_cached(self, plan: ReadPlan, lo: int, hi: int) -> bytes | None:
        """Bytes ``[lo, hi)`` (inside one block) from cached pages of one grid, or None."""
        for page_size in self.sparse.page_sizes(hi - lo):
            pages = self._page_plan(plan, page_size)
            found = []
            for p in pages.blocks(lo, hi):
                key = pages.key(p)
                # holds() first: a page miss is then a stat, not an index look-up.
                data = self.blocks.get_cached(key) if self.blocks.holds(key) else None
                if data is None:
                    break
                found.append(data)
            else:
                return pages.cut(found, lo, hi)
        return None

    async def _pages_part(self, plan: ReadPlan, wanted: Pages, lo: int, hi: int) -> bytes:
        """Bytes ``[lo, hi)`` through the pages ``wanted``: those no tier holds are fetched in
        one request (from the first missing to the last) and kept (:meth:`_keep_pages`)."""
        indices = wanted.indices
        pages = self._page_plan(plan, wanted.size)
        found: dict[int, bytes] = {}
        for p in indices:
            key = pages.key(p)
            data = self.blocks.get_cached(key) if self.blocks.holds(key) else None
            if data is not None:
                found[p] = data
        missing = [p for p in indices if p not in found]
        if missing:
            first, last = missing[0], missing[-1]
            start = pages.block_start(first)
            data = await self._backend_source.fetch_span(
                plan, start, pages.block_start(last) + pages.block_length(last)
            )
            found.update(self._keep_pages(plan, wanted.size, start, data))
        return pages.cut([found[p] for p in indices], lo, hi)

    def _keep_pages(
        self, plan: ReadPlan, page_size: int, start: int, data: bytes
    ) -> dict[int, bytes]:
        """Cut ``data`` (bytes of ``plan`` from ``start``, a boundary of pages of
        ``page_size``) into the whole pages it holds, kept in MEM at once and written to the
        SSD tier in the background (the reader does not wait for the disk); returns them by
        page index."""
        pages = self._page_plan(plan, page_size)
        kept: dict[int, bytes] = {}
        if not data:
            return kept
        for p in pages.blocks(start, start + len(data)):
            offset = pages.block_start(p) - start
            piece = data[offset : offset + pages.block_length(p)]
            if len(piece) == pages.block_length(p):
                kept[p] = piece
        self.blocks.put_soon([(pages.key(p), piece) for p, piece in kept.items()])
        return kept

    def read_small_cached(self, plan: ReadPlan) -> bytes | None:
        """All of a one-block object (a small file) from the cache tiers, in the calling
        thread; None if it is larger than a block or not cached. The warm small-file read,
        without the range arithmetic of :meth:`read_cached` (a tenth of its time)."""
        if not 0 < plan.size <= plan.block_size:
            return None
        data = self.blocks.get_cached(plan.key(0), hold=False)
        return data if data is not None and len(data) == plan.size else None

    def read_cached(self, plan: ReadPlan, start: int, end: int) -> bytes | None:
        """Like :meth:`read`, from the cache tiers only, in the calling thread (no event loop);
        None if a block is missing."""
        end = min(end, plan.size)
        if start >= end:
            return b""
        indices = plan.blocks(start, end)
        if len(indices) == 1:
            index = indices[0]
            first = plan.block_start(index)
            whole = start == first and end == first + plan.block_length(index)
            key = plan.key(index)
            # A part of a block: holds() first, so that a miss (a cold sparse read, before it
            # goes to the loop) costs a stat, not an SSD open and an index query.
            if whole or self.blocks.holds(key):
                data = self.blocks.get_cached(key, hold=not whole)
                if data is not None:
                    return plan.cut([data], start, end)
            if end - start > plan.block_size // 16 or not self.sparse.paged(plan.block_size):
                return None
            return self._pages_cached(plan, start, end)
        # Several blocks: read into the bytes handed out (one copy, no zero-fill first), where
        # reading each block and joining them copied every byte twice.
        return filled_bytes(end - start, lambda view: self._fill_cached(view, plan, start, end))

    def _fill_cached(self, view: memoryview, plan: ReadPlan, start: int, end: int) -> bool:
        """Put bytes ``[start, end)`` into ``view`` from the cache tiers; False on a miss."""
        whole: list[tuple[BlockKey, memoryview]] = []
        for i in plan.blocks(start, end):
            first = plan.block_start(i)
            stop = first + plan.block_length(i)
            lo, hi = max(start, first), min(end, stop)
            part = view[lo - start : hi - start]
            key = plan.key(i)
            if lo == first and hi == stop:
                whole.append((key, part))
                continue
            data = self.blocks.get_cached(key)
            if data is None and self.sparse.paged(plan.block_size):
                data = self._pages_cached(plan, lo, hi)
                if data is not None:
                    part[:] = data
                    continue
            if data is None:
                return False
            part[:] = data[lo - first : hi - first]
        return self.blocks.get_cached_many_into(whole)

    @on_engine_loop
    async def read_latest(
        self, path: str, start: int | None, end: int | None, *, block_size: int, ttl: float
    ) -> bytes:
        """Bytes ``[start, end)`` (fsspec's convention: None, negative) of the current version
        of ``path``, re-planned once if it changes while read: one version, never mixed."""

        async def whole(plan: ReadPlan) -> bytes:
            return await self.read(plan, *plan.span(start, end))

        return await self.latest(
            path, whole, block_size=block_size, ttl=ttl, first_reads=[(start, end)]
        )

    @on_engine_loop
    async def read_ranges(
        self,
        path: str,
        ranges: Sequence[tuple[int | None, int | None]],
        *,
        block_size: int,
        ttl: float,
    ) -> list[bytes | BaseException]:
        """Bytes of each of ``ranges`` (fsspec's convention) of ``path``, all fetched at once
        (the backend source bounds the requests in flight); a cold object is planned from the
        first reads (:meth:`_plan_for`). A range that meets a change of the object is read
        from its new version (planned once for all of them). The error of one range is its
        result; one planning the object (missing, a directory, unreachable) is raised."""
        plan = await self._plan_for(path, ranges, block_size=block_size, ttl=ttl)
        newer: asyncio.Future[ReadPlan] | None = None
        read_before_the_change: list[int] = []

        async def one(index: int, start: int | None, end: int | None) -> bytes:
            nonlocal newer
            try:
                data = await self.read(plan, *plan.span(start, end))
            except ObjectChangedError:
                if newer is None:
                    newer = asyncio.ensure_future(self.replan(plan, ttl=ttl))
                again = await asyncio.shield(newer)
                return await self.read(again, *again.span(start, end))
            read_before_the_change.append(index)
            return data

        results: list[bytes | BaseException] = list(
            await asyncio.gather(
                *(one(i, *r) for i, r in enumerate(ranges)), return_exceptions=True
            )
        )
        if newer is not None:
            # Ranges read before the change was seen hold the old version: they are read again
            # from the new one, so that every range comes from one version.
            again = await newer
            redone = await asyncio.gather(
                *(self.read(again, *again.span(*ranges[i])) for i in read_before_the_change),
                return_exceptions=True,
            )
            for i, data in zip(read_before_the_change, redone, strict=True):
                results[i] = data
        return results

    def missing_blocks(
        self, plan: ReadPlan, indices: range | list[int] | None = None, *, on_disk: bool = False
    ) -> list[int]:
        """Which of ``indices`` (default: all blocks) no tier holds (with ``on_disk``: which
        the SSD tier does not hold, for prefetch's resume). Not verified: a cheap look-up."""
        indices = plan.blocks() if indices is None else indices
        if on_disk:
            ssd = self.blocks.ssd
            return [i for i in indices if not ssd.contains(plan.key(i))]
        return [i for i in indices if not self.blocks.holds(plan.key(i))]

    @on_engine_loop
    async def fetch(self, plan: ReadPlan, indices: range | list[int]) -> None:
        """Bring blocks ``indices`` of ``plan`` into the cache (read-ahead, prefetch)."""
        await asyncio.gather(*(self._block(plan, i) for i in indices))

    def fetch_ahead(self, plan: ReadPlan, indices: range | list[int]) -> None:
        """Start :meth:`fetch` in the background from any thread; failures are only logged
        (the reader meets them again, with their message, if it reads those blocks)."""
        if not indices:
            return
        future = asyncio.run_coroutine_threadsafe(self.fetch(plan, indices), self.loop)
        future.add_done_callback(_log_failure)

    def opened(self, plan: ReadPlan, *, ahead: int) -> None:
        """``plan``'s object was opened for reading: if a loop is reading its directory in name
        order, fetch the first blocks of the next ``ahead`` files in the background."""
        if ahead <= 0:
            return
        listing = self.metadata.listing(
            self.identity, parent_of(plan.path), allow_stale=True, hint=True
        )
        if listing is None:
            self.scans.opened_unlisted(plan.path)
            return
        ahead_of = self.scans.opened(plan.path, listing, ahead=ahead)
        if not ahead_of:
            return  # most opens of a scan: the files ahead were handed out by the opens before
        plans = [
            ReadPlan(self.identity, str(e.info["name"]), e.version, size, plan.block_size)
            for e in ahead_of
            if (size := int(e.info.get("size") or 0)) > 0
        ]
        # A file whose first block a tier holds is a local read away: fetching it ahead only
        # competes with the reader (and is thrown away when MEM cannot keep it).
        plans = [p for p in plans if not self.blocks.holds(p.key(0))]
        if plans and plan.size > 0 and not self.blocks.holds(plan.key(0)):
            # The file just opened first: its reader is about to ask for its first block, and
            # would otherwise queue behind the files fetched ahead of it (the fetch slots, the
            # I/O threads' cache checks), a fetch's time behind. It joins this flight.
            plans.insert(0, plan)
        if plans:
            future = asyncio.run_coroutine_threadsafe(self._first_blocks(plans), self.loop)
            future.add_done_callback(_log_failure)

    async def _first_blocks(self, plans: list[ReadPlan]) -> None:
        async def one(plan: ReadPlan) -> None:
            if self.health.online:
                with contextlib.suppress(Exception):
                    await self._block(plan, 0)

        await asyncio.gather(*(one(p) for p in plans))

    @on_engine_loop
    async def materialise(
        self, path: str, local_path: str, *, block_size: int, ttl: float, step_blocks: int = 16
    ) -> ReadPlan:
        """Copy the current version of ``path`` into the local file ``local_path``, reading
        ``step_blocks`` blocks at a time; started again from the first byte if the object
        changes while copied. Returns the plan of the version written."""

        import aiofiles  # only copies need it, not every reader's start

        async def copy(plan: ReadPlan) -> ReadPlan:
            step = plan.block_size * max(1, step_blocks)
            async with aiofiles.open(local_path, "wb") as out:
                for start in range(0, plan.size, step):
                    await out.write(await self.read(plan, start, start + step))
            return plan

        return await self.latest(
            path, copy, block_size=block_size, ttl=ttl, first_reads=[(0, block_size)]
        )

    # --- pins ----------------------------------------------------------------------------------
    def pin(self, name: str, *, prefix: str, reserve_bytes: int) -> None:
        """Keep this backend's blocks under ``prefix`` from eviction (PinError if too big)."""
        self.blocks.pin(name, backend=self.identity, prefix=prefix, reserve_bytes=reserve_bytes)

    def unpin(self, name: str) -> bool:
        """Release a pin; True if it existed."""
        return self.blocks.unpin(name)

    # --- writes --------------------------------------------------------------------------------
    def forget(self, path: str, *, block_size: int, recursive: bool = False) -> None:
        """Forget metadata and cached blocks of ``path`` (about to be replaced or removed)."""
        cached = self.metadata.info(self.identity, path, allow_stale=True)
        if cached is not None and cached.info.get("type") != "directory":
            plan = self._plan_of(cached, path, block_size)
            self.blocks.invalidate([plan.key(i) for i in plan.blocks()])
        # Pages of any version of it this engine fetched: stale ones are never read (their
        # keys name the old version), this only frees their space.
        for version, block in self.sparse.forget(path):
            for page_bytes in {self.sparse.page_size, self.sparse.fine_page_size}:
                first = block * block_size // page_bytes
                self.blocks.invalidate(
                    [
                        BlockKey(self.identity, path, version, p, page_bytes)
                        for p in range(first, first + block_size // page_bytes)
                    ]
                )
        self.metadata.invalidate(self.identity, path, recursive=recursive)

    def forget_all(self) -> None:
        """Forget every cached info and listing of this backend (blocks stay: they are keyed
        on object versions, so no stale byte can be served from them)."""
        self.metadata.invalidate_backend(self.identity)

    @on_engine_loop
    async def write(
        self,
        paths: list[str],
        method: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None = None,
        *,
        block_size: int,
        forget_below: bool = False,
    ) -> None:
        """Call the backend's writing method ``method(*args, **kwargs)``, then forget what it
        replaced: ``paths`` (and with ``forget_below``, everything below them).

        An unreachable backend wrote nothing (object stores replace objects whole), so the
        cache is kept, and stays readable offline; the error is BackendUnavailableError.
        """
        targets = ", ".join(paths)
        try:
            async with self.guard(targets, problem=f"cannot {method} {targets}"):
                await self.backend.call(method, *args, **(kwargs or {}))
        except BackendUnavailableError:
            raise
        except Exception:
            # It may have written part (a recursive rm): what was cached may be gone.
            self._forget_paths(paths, block_size, forget_below)
            raise
        self._forget_paths(paths, block_size, forget_below)

    def _forget_paths(self, paths: list[str], block_size: int, recursive: bool) -> None:
        for path in paths:
            self.forget(path, block_size=block_size, recursive=recursive)

    # --- life cycle ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write pending counters and hits of the cache to its index."""
        self.blocks.flush()

    def close(self) -> None:
        """Close the directory's store (every engine on it); the next use opens it again."""
        self.store.close()

    def __repr__(self) -> str:
        return f"<ReadEngine {self.identity} on {self.store.directory}>"


def _normal(info: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry with its name as ``info()`` names it: some backends (ossfs) end
    directory names with ``/`` in listings only, and the entry must answer ``info`` offline."""
    out = dict(info)
    name = str(out.get("name", ""))
    if len(name) > 1 and name.endswith("/"):
        out["name"] = name.rstrip("/")
    return out


async def _ready(data: bytes) -> bytes:
    return data


def _given(data: T) -> Callable[[], Awaitable[T]]:
    """A block fetcher that hands over bytes already fetched."""

    async def fetch() -> T:
        return data

    return fetch


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("fetch ahead failed: %s", future.exception())
