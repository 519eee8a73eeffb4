"""One read engine per process per (cache directory, backend): where filesystems find theirs.

fsspec builds a new :class:`~edgecache.fs.EdgeCacheFileSystem` for many calls (every
``fsspec.open`` of another URL, every pickled copy in a worker), so nothing node-level may live
on a filesystem instance. Instead each instance asks :func:`engine_for` for the engine of its
cache directory and backend, and gets the same object as every other instance of the process:

- stores (:class:`~edgecache.engine._store.Store`: tiered and metadata caches) are keyed on the
  real path of the cache directory alone, never on read settings;
- engines are keyed on (real path, backend identity, client options): the identity names the
  endpoint but not the credentials, and a client must never carry another caller's credentials.
  Options that only say how to bind a client to a loop (``asynchronous``, ``loop``) are not
  part of the key: the engine binds its client to its own loop.

Everything is created under one lock. A backend's client (its HTTP session) is closed when its
engine is replaced (its store was closed) and, for every engine left, when the process exits,
on the loop it is bound to. After a fork the child forgets the parent's engines and
stores (without touching them: their loop, threads, locks, sqlite connections and sockets belong
to the parent) and builds its own on first use; a spawned worker simply starts empty.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fsspec.utils import tokenize

from edgecache.backends import CLIENT_BINDING_OPTIONS, Backend, get_backend
from edgecache.config import CacheSettings, StoreSettings
from edgecache.engine._engine import ReadEngine
from edgecache.engine._store import Store

__all__ = ["backend_options", "engine_for", "open_engines", "when_engine_opens"]

log = logging.getLogger(__name__)


_lock = threading.Lock()
_stores: dict[str, Store] = {}
_engines: dict[tuple[str, str, str], ReadEngine] = {}
_by_request: dict[tuple[str, str, str], ReadEngine] = {}
"""(cache_dir as given, protocol, options token) -> engine: the look-up without building a
backend, which is what every call of every filesystem instance does."""
_opened_hooks: list[Callable[[ReadEngine], None]] = []
"""Called with every engine made from now on (the pool attaches its peers to each)."""
_warned: set[tuple[str, str]] = set()
"""(directory, settings) whose being ignored was already said."""
_inherited: list[object] = []
"""Engines and stores of the parent process, kept (never used) so that no finaliser of theirs
closes a connection or a file the parent still uses."""


def backend_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` for a backend, without the loop-binding ones (see module docstring)."""
    return {k: v for k, v in (options or {}).items() if k not in CLIENT_BINDING_OPTIONS}


def engine_for(
    settings: CacheSettings,
    *,
    protocol: str = "file",
    options: Mapping[str, Any] | None = None,
    backend: Backend | None = None,
) -> ReadEngine:
    """The engine of this process for ``settings.store.cache_dir`` and the backend ``protocol`` +
    ``options`` (or the given ``backend`` object, which then gets an engine of its own)."""
    engine, created = _engine_for(settings, protocol, options, backend)
    if created:
        for hook in list(_opened_hooks):
            hook(engine)
    return engine


def _engine_for(
    settings: CacheSettings,
    protocol: str,
    options: Mapping[str, Any] | None,
    backend: Backend | None,
) -> tuple[ReadEngine, bool]:
    created = False
    with _lock:
        request: tuple[str, str, str] | None = None
        if backend is None:
            options = backend_options(options)
            cache_dir = settings.store.cache_dir
            if not cache_dir.startswith("/"):
                # A relative directory names another one after a chdir.
                cache_dir = os.path.abspath(cache_dir)
            request = (cache_dir, protocol, tokenize(protocol, options))
            found = _by_request.get(request)
            if found is not None and not found.closed:
                _warn_if_ignored(found.store, settings.store)
                _warn_if_engine_ignores(found, settings)
                return found, False
            backend = get_backend(protocol, options)
            client = request[2]
        else:
            client = f"object:{id(backend)}"
        store = _store(settings)
        key = (store.directory, backend.identity, client)
        engine = _engines.get(key)
        if engine is None or engine.closed:
            if engine is not None and engine.backend is not backend:
                _close_backend(engine)
            engine = _engines[key] = ReadEngine(backend, store, settings)
            created = True
        else:
            _warn_if_engine_ignores(engine, settings)
        if request is not None:
            _by_request[request] = engine
        return engine, created


def when_engine_opens(hook: Callable[[ReadEngine], None]) -> Callable[[], None]:
    """Call ``hook`` with every engine of the process, those open now and those made later
    (in the thread that asks for them, outside the registry lock); returns the function that
    stops it. How the pool adds its peer source to every engine without the callers knowing."""
    with _lock:
        _opened_hooks.append(hook)
        current = [e for e in _engines.values() if not e.closed]
    for engine in current:
        hook(engine)

    def stop() -> None:
        with _lock:
            if hook in _opened_hooks:
                _opened_hooks.remove(hook)

    return stop


def _store(settings: CacheSettings) -> Store:
    directory = os.path.realpath(settings.store.cache_dir)
    store = _stores.get(directory)
    if store is None or store.closed:
        store = _stores[directory] = Store(settings)
    else:
        _warn_if_ignored(store, settings.store)
    return store


def _warn_if_ignored(store: Store, wanted: StoreSettings) -> None:
    """Warn (once per directory and difference) when ``wanted`` store settings differ from
    those ``store`` was opened with: they cannot apply, and silence would let a user believe
    a quota or a compression they set is in force."""
    held = store.settings.store
    if held == wanted:
        return
    differ = {
        f.name: (getattr(held, f.name), getattr(wanted, f.name))
        for f in dataclasses.fields(StoreSettings)
        if f.name != "cache_dir" and getattr(held, f.name) != getattr(wanted, f.name)
    }
    _warn_once(
        store.directory,
        differ,
        "cache directory %s is already open in this process with %s; %s (asked for by a "
        "later filesystem) are not used: one cache directory has one store per process, "
        "whose quotas, watermarks, compression and eviction policy are those of its first "
        "opener (read settings such as block_size and metadata_ttl are each filesystem's "
        "own). Give every filesystem on this directory the same store settings, or another "
        "cache_dir.",
    )


def _warn_if_engine_ignores(engine: ReadEngine, wanted: CacheSettings) -> None:
    """Warn (once per engine and difference) when a later filesystem asks for node-level
    settings other than those its engine was made with: the link's fetch concurrency and the
    backend health periods are the engine's, one per backend and directory."""
    held = engine.settings
    if (
        held.health == wanted.health
        and held.read.fetch_concurrency == wanted.read.fetch_concurrency
    ):
        return  # every fsspec.open of a loop comes here: the common case costs one comparison
    differ: dict[str, tuple[Any, Any]] = {}
    if held.read.fetch_concurrency != wanted.read.fetch_concurrency:
        differ["fetch_concurrency"] = (held.read.fetch_concurrency, wanted.read.fetch_concurrency)
    for f in dataclasses.fields(type(held.health)):
        ours, theirs = getattr(held.health, f.name), getattr(wanted.health, f.name)
        if ours != theirs:
            differ[f"health.{f.name}"] = (ours, theirs)
    _warn_once(
        f"{engine.store.directory} {engine.identity}",
        differ,
        "the read engine of %s is already open in this process with %s; %s (asked for by a "
        "later filesystem) are not used: fetch concurrency and backend health are node-level, "
        "those of the engine's first opener.",
    )


def _warn_once(where: str, differ: dict[str, tuple[Any, Any]], message: str) -> None:
    if not differ:
        return
    ours = ", ".join(f"{name}={wanted!r}" for name, (_, wanted) in differ.items())
    if (where, ours) in _warned:
        return
    _warned.add((where, ours))
    first = ", ".join(f"{name}={held!r}" for name, (held, _) in differ.items())
    log.warning(message, where, first, ours)


def open_engines() -> list[ReadEngine]:
    """The engines this process has open (for tests, stats and the agent)."""
    with _lock:
        return [e for e in _engines.values() if not e.closed]


#: How long the process's exit waits for the backends' clients to close (a loop that no longer
#: answers must not hold the exit).
CLOSE_AT_EXIT_SECONDS = 5.0


def _close_backend(engine: ReadEngine) -> concurrent.futures.Future[None] | None:
    """Start closing the client of ``engine``'s backend on the loop it is bound to (None: no
    loop runs it), after stopping the engine's background probes, which would open it again."""
    engine.health.stop_probing()
    backend = engine.backend
    loop = backend.loop
    if loop.is_closed() or not loop.is_running():
        return None
    future = asyncio.run_coroutine_threadsafe(backend.close(), loop)
    future.add_done_callback(_log_close_failure)
    return future


def _log_close_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("closing a backend's client failed: %s", future.exception())


def _close_every_backend() -> None:
    """At exit: close the clients of every engine's backend, so that no HTTP session is left
    for the interpreter's last collection (aiohttp reports each as unclosed)."""
    with _lock:
        engines = list(_engines.values())
    for engine in engines:  # first: engines may share a backend
        engine.health.stop_probing()
    one_per_backend = {id(e.backend): e for e in engines}.values()
    closing = [f for f in map(_close_backend, one_per_backend) if f is not None]
    deadline = time.monotonic() + CLOSE_AT_EXIT_SECONDS
    for future in closing:
        with contextlib.suppress(Exception):
            future.result(max(0.0, deadline - time.monotonic()))


atexit.register(_close_every_backend)


def _forget_the_parents() -> None:
    global _lock
    _lock = threading.Lock()
    _inherited.extend([*_stores.values(), *_engines.values()])
    _stores.clear()
    _engines.clear()
    _by_request.clear()
    _opened_hooks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents)
