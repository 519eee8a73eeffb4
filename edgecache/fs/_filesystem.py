"""EdgeCacheFileSystem: the fsspec ``edgecache`` protocol, a thin adapter over the read engine.

Place in the data path::

    user code -- fsspec.open("edgecache::s3://b/k") --> EdgeCacheFileSystem (this module)
        --> ReadEngine of (cache dir, backend), shared by every instance of the process
              metadata (info/ls/find/glob) --> MetadataCache (TTL, on disk) --> backend
              bytes (cat/open/get)         --> ReadPlan --> TieredCache --> block sources

It is an fsspec ``AsyncFileSystem`` (coroutines ``_cat_file``, ``_info``... with fsspec's
generated sync wrappers) and a ``ChainedFileSystem`` (so ``edgecache::<url>`` chaining hands it
the target's path as ``fo``, which is left out of the instance token: ``fsspec.open`` of another
file of the same store gives the same instance). An instance holds only its settings and where
to find its engine (:func:`edgecache.engine.engine_for`); everything node-level (backend client,
health, caches, scans, single-flight, fetch concurrency) is the engine's, so a new instance, a
pickled copy in a worker process or a forked child each reach the engine of their process.

When the backend is unreachable, cached metadata is served whatever its age, cached blocks are
served, and anything else raises :class:`~edgecache.errors.BackendUnavailableError` (a
``ConnectionError``) saying so; an answer the cache cannot give offline (``find``, ``isdir``,
``walk`` of what was never listed) raises too, rather than looking empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar, cast

from fsspec.asyn import AsyncFileSystem, get_loop, sync
from fsspec.implementations.chained import ChainedFileSystem

from edgecache.backends import Backend
from edgecache.cache import TieredCache
from edgecache.config import CacheSettings
from edgecache.engine import BackendHealth, MetadataCache, ReadEngine, ReadPlan, engine_for
from edgecache.errors import BackendUnavailableError
from edgecache.fs._file import EdgeCacheFile
from edgecache.fs._upload import SpooledUpload, WriteThrough

__all__ = ["EdgeCacheFileSystem"]

_GLOB_CHARS = frozenset("*?[")
_OBJECT_PATHS_KEPT = 65536
"""Paths whose object path a filesystem remembers (then it starts afresh)."""
_FSSPEC_KWARGS = {
    "fo",
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
}


class _StripProtocol:
    """``EdgeCacheFileSystem._strip_protocol``, which fsspec calls two ways. On the class
    (splitting a chained URL, before any backend exists) it removes edgecache's own part; on an
    instance (``glob``, ``expand_path``, ``find``, ``open``...) it gives the backend's name of
    the object, target protocol removed. fsspec compares the names a backend lists with the
    path it stripped: with ``s3://`` left on, a glob of ``s3://bkt/dir/*`` matched nothing and
    ``expand_path("s3://bkt/dir", recursive=True)`` named the root twice."""

    def __get__(
        self, instance: EdgeCacheFileSystem | None, owner: type[EdgeCacheFileSystem]
    ) -> Callable[[Any], Any]:
        if instance is None:
            return owner._strip_own_protocol
        return instance.object_path


class EdgeCacheFileSystem(AsyncFileSystem, ChainedFileSystem):  # type: ignore[misc]
    """Cached, offline-tolerant access to any backend, as an fsspec filesystem.

    ``fsspec.filesystem("edgecache", target_protocol="s3", target_options={...},
    cache_dir="/var/cache/edgecache", block_size="4MiB")``; cache options are the names of
    :class:`~edgecache.config.CacheSettings` (sizes accept ``4MiB``/``10Gi``).
    """

    protocol: ClassVar[str] = "edgecache"
    root_marker = ""
    cachable = True
    # URL chaining passes the target path as ``fo``: one instance per store, not per file.
    _strip_tokenize_options = ("fo",)

    def __init__(
        self,
        target_protocol: str | None = None,
        target_options: Mapping[str, Any] | None = None,
        *,
        settings: CacheSettings | None = None,
        backend: Backend | None = None,
        asynchronous: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        **options: Any,
    ) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop)
        cache_options = {k: v for k, v in options.items() if k not in _FSSPEC_KWARGS}
        self.settings = CacheSettings.from_options(cache_options, base=settings)
        self._target_protocol = target_protocol or "file"
        self._object_paths: dict[tuple[str, str], str] = {}
        self._target_options = dict(target_options or {})
        self._given_backend = backend
        self._given_pid = os.getpid()
        self._engine: ReadEngine | None = None
        self._loop_pid = os.getpid()
        self.engine  # noqa: B018 - resolve now: a bad option or a missing plugin fails here

    # --- the engine ------------------------------------------------------------------------------
    @property
    def engine(self) -> ReadEngine:
        """The read engine of this process for this cache directory and backend."""
        engine = self._engine
        if engine is None or engine.closed:
            _relay_through_the_agent()
            engine = self._engine = engine_for(
                self.settings,
                protocol=self._target_protocol,
                options=self._target_options,
                backend=self._backend_of_this_process(),
            )
        return engine

    def _backend_of_this_process(self) -> Backend | None:
        backend = self._given_backend
        if backend is not None and self._given_pid != os.getpid():
            # A backend object made before a fork: its client belongs to the parent.
            backend = self._given_backend = type(backend)(backend.protocol, backend.options)
            self._given_pid = os.getpid()
        return backend

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop fsspec's sync wrappers run on; after a fork, the child's I/O loop (fsspec's
        own property refuses to work in a forked child)."""
        if self._loop_pid != os.getpid():
            self._loop_pid = self._pid = os.getpid()
            self._loop = None if self.asynchronous else get_loop()
        return cast(asyncio.AbstractEventLoop, self._loop)

    @property
    def backend(self) -> Backend:
        """The backend the engine reads."""
        return self.engine.backend

    @property
    def cache(self) -> TieredCache:
        """The cache directory's tiered block cache."""
        return self.engine.blocks

    @property
    def metadata(self) -> MetadataCache:
        """The cache directory's metadata cache."""
        return self.engine.metadata

    @property
    def health(self) -> BackendHealth:
        """The backend's health as the engine sees it."""
        return self.engine.health

    @property
    def _ttl(self) -> float:
        return self.settings.metadata.ttl_seconds

    @property
    def _block_size(self) -> int:
        return self.settings.read.block_size

    # --- paths ---------------------------------------------------------------------------------
    @classmethod
    def _strip_own_protocol(cls, path: Any) -> Any:
        """``path`` without edgecache's own part (``edgecache::``, ``edgecache://``): what can
        be said without knowing the backend (fsspec splitting a chained URL on the class)."""
        if isinstance(path, list):
            # fsspec's bulk methods (get, put, cp, rm) strip lists of paths in one call.
            return [cls._strip_own_protocol(p) for p in path]
        text = str(path)
        if "::" in text:
            text = text.rsplit("::", 1)[-1]
        if text.startswith("edgecache://"):
            text = text[len("edgecache://") :]
        return text

    _strip_protocol = _StripProtocol()

    def object_path(self, path: Any) -> Any:
        """``path`` (a URL, chained or not, or a path; or a list of them) as the backend names
        the object."""
        if isinstance(path, list):
            return [self.object_path(p) for p in path]
        # Remembered: stripping costs a few microseconds per call (a local path is made
        # absolute, a URL parsed), which is a fifth of a warm open+read of a small file.
        # A relative path is remembered with the working directory it was resolved in.
        if not isinstance(path, str):
            return str(self.backend.strip(self._strip_own_protocol(path)))
        key = (path, "" if path.startswith("/") or "://" in path else os.getcwd())
        paths = self._object_paths
        target = paths.get(key)
        if target is None:
            target = str(self.backend.strip(self._strip_own_protocol(path)))
            if len(paths) >= _OBJECT_PATHS_KEPT:
                paths.clear()
            paths[key] = target
        return target

    _target = object_path

    # --- metadata ------------------------------------------------------------------------------
    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict((await self.engine.info(self._target(path), ttl=self._ttl)).info)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Object info; answered from the metadata cache without the event loop when fresh."""
        cached = self.engine.info_cached(self._target(path), ttl=self._ttl)
        if cached is not None:
            return dict(cached.info)
        result: dict[str, Any] = sync(self.loop, self._info, path, **kwargs)
        return result

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        entries = await self.engine.listing(self._target(path), ttl=self._ttl)
        if detail:
            return [dict(e.info) for e in entries]
        return [e.info["name"] for e in entries]

    # Offline, "cannot know" must not read as "no": fsspec's generic versions turn every
    # OSError (BackendUnavailableError is one) into False or an empty walk.
    async def _isdir(self, path: str) -> bool:
        try:
            return bool((await self._info(path))["type"] == "directory")
        except BackendUnavailableError:
            raise
        except OSError:
            return False

    async def _isfile(self, path: str) -> bool:
        try:
            return bool((await self._info(path))["type"] == "file")
        except BackendUnavailableError:
            raise
        except (OSError, ValueError):
            return False

    async def _walk(
        self, path: str, maxdepth: int | None = None, on_error: Any = "omit", **kwargs: Any
    ) -> AsyncIterator[Any]:
        def check(exc: BaseException) -> None:
            if isinstance(exc, BackendUnavailableError) or on_error == "raise":
                raise exc
            if callable(on_error):
                on_error(exc)

        async for entry in super()._walk(path, maxdepth, on_error=check, **kwargs):
            yield entry

    async def _find(
        self, path: str, maxdepth: int | None = None, withdirs: bool = False, **kwargs: Any
    ) -> Any:
        target = self._target(path)
        # glob's hint for filtering on the server side: the walk below filters all the same,
        # and the listings stored must be whole.
        kwargs.pop("prefix", None)
        if maxdepth is None:
            await self.engine.list_tree(target, ttl=self._ttl)
        else:
            await self._list_levels(target, maxdepth)
        # The walk now reads every listing from the metadata cache.
        return await super()._find(target, maxdepth=maxdepth, withdirs=withdirs, **kwargs)

    async def _list_levels(self, root: str, maxdepth: int) -> None:
        """List the directories of the first ``maxdepth`` levels below ``root``, the
        directories of one level concurrently (fsspec's walk lists them one after another)."""
        level = [root]
        for _ in range(maxdepth):
            listings = await asyncio.gather(
                *(self.engine.listing(d, ttl=self._ttl) for d in level), return_exceptions=True
            )
            level = [
                str(e.info["name"])
                for entries in listings
                if isinstance(entries, list)
                for e in entries
                if e.info.get("type") == "directory"
            ]
            if not level:
                return

    async def files_under(self, target: str) -> dict[str, dict[str, Any]]:
        """The files under ``target`` (a file, a directory, or a glob pattern; directories a
        pattern matches count with everything below them), each with its info, as prefetch
        and DataLoads expand what they are given. The listings walked are stored on the way.
        FileNotFoundError when nothing matches."""
        if _GLOB_CHARS & set(target):
            matches = await self._glob(target, detail=True)
            out: dict[str, dict[str, Any]] = {}
            for path, info in matches.items():
                if info.get("type") == "directory":
                    out.update(await self._find(path, detail=True))
                else:
                    out[path] = info
            if not out:
                raise FileNotFoundError(f"nothing matches {target}")
            return out
        info = await self._info(target)
        if info.get("type") == "directory":
            found: dict[str, dict[str, Any]] = await self._find(target, detail=True)
            return found
        return {info["name"]: info}

    # --- reading -------------------------------------------------------------------------------
    def _plan(self, target: str) -> ReadPlan:
        """A plan of ``target`` from cached metadata, else asking the backend (sync callers)."""
        engine = self.engine
        plan = engine.plan_cached(target, block_size=self._block_size, ttl=self._ttl)
        if plan is None:
            # On the engine's loop: this works for an ``asynchronous=True`` instance too.
            bs, ttl = self._block_size, self._ttl
            plan = sync(engine.loop, engine.plan, target, block_size=bs, ttl=ttl)
        return plan

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        return await self.engine.read_latest(
            self._target(path), start, end, block_size=self._block_size, ttl=self._ttl
        )

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes of ``path`` (or a range); cached ranges are served without the event loop."""
        engine = self.engine
        with contextlib.suppress(IsADirectoryError):  # the async path says so
            plan = engine.plan_cached(
                self._target(path), block_size=self._block_size, ttl=self._ttl
            )
            if plan is not None:
                data = engine.read_cached(plan, *plan.span(start, end))
                if data is not None:
                    return data
        result: bytes = sync(self.loop, self._cat_file, path, start, end, **kwargs)
        return result

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: int | None = None,
        batch_size: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Ranges of objects, all fetched at once (the engine bounds the requests in flight):
        each object's ranges are read from one version, a cold object planned from its first
        reads, and a small range costs the pages it covers."""
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        count = len(paths)
        starts = list(starts) if isinstance(starts, list | tuple) else [starts] * count
        ends = list(ends) if isinstance(ends, list | tuple) else [ends] * count
        if not count == len(starts) == len(ends):
            raise ValueError("paths, starts and ends must be of the same length")
        targets = [self._target(p) for p in paths]
        asked: dict[str, list[int]] = {}
        for i, target in enumerate(targets):
            asked.setdefault(target, []).append(i)
        read = await asyncio.gather(
            *(
                self.engine.read_ranges(
                    target,
                    [(starts[i], ends[i]) for i in indices],
                    block_size=self._block_size,
                    ttl=self._ttl,
                )
                for target, indices in asked.items()
            ),
            return_exceptions=True,
        )
        results: list[Any] = [None] * count
        for indices, found in zip(asked.values(), read, strict=True):
            for n, i in enumerate(indices):
                results[i] = found if isinstance(found, BaseException) else found[n]
        if on_error == "raise":
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return list(results)

    def iter_cat(self, paths: Sequence[str], *, batch: int = 64) -> Iterator[bytes]:
        """The bytes of ``paths``, in order, as chunks (``edgecache cat`` of many URLs).

        Objects of up to two blocks are fetched ``batch`` at a time, concurrently (a list of
        small files costs about one round trip per batch, not per file); larger ones are
        streamed block by block with read-ahead, so memory stays bounded. The first path that
        fails raises its error after the bytes of the paths before it.
        """
        small_limit = 2 * self._block_size
        for start in range(0, len(paths), batch):
            group = list(paths[start : start + batch])
            infos = sync(self.loop, self._gather, [self._info(p) for p in group])
            small = [
                p
                for p, info in zip(group, infos, strict=True)
                if isinstance(info, dict)
                and info.get("type") != "directory"
                and int(info.get("size") or 0) <= small_limit
            ]
            contents = dict(
                zip(
                    small,
                    sync(self.loop, self._gather, [self._cat_file(p) for p in small]),
                    strict=True,
                )
            )
            for path, info in zip(group, infos, strict=True):
                if isinstance(info, BaseException):
                    raise info
                data = contents.get(path)
                if isinstance(data, BaseException):
                    raise data
                if data is not None:
                    yield data
                    continue
                with self.open(path, "rb") as f:
                    while chunk := f.read(self._block_size):
                        yield chunk

    @staticmethod
    async def _gather(coroutines: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        return list(await asyncio.gather(*coroutines, return_exceptions=True))

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        target = self._target(rpath)
        info = await self.engine.info(target, ttl=self._ttl)
        if info.info.get("type") == "directory":
            os.makedirs(lpath, exist_ok=True)
            return
        await self.engine.materialise(
            target,
            lpath,
            block_size=self._block_size,
            ttl=self._ttl,
            step_blocks=self.settings.read.fetch_concurrency,
        )

    def open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        cache_options: dict[str, Any] | None = None,
        compression: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Open ``path``; ``"rb"`` without options (what ``fsspec.open`` asks) goes straight to
        a file handle, past fsspec's generic checks for text, compression and transactions."""
        if mode == "rb" and compression is None and not kwargs and not self._intrans:
            return self._open_for_reading(self._target(path))
        return super().open(
            path,
            mode,
            block_size=block_size,
            cache_options=cache_options,
            compression=compression,
            **kwargs,
        )

    def _open_for_reading(self, target: str) -> EdgeCacheFile:
        plan = self._plan(target)
        self.engine.opened(plan, ahead=self.settings.read.scan_ahead_files)
        return EdgeCacheFile(self, plan)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        target = self._target(path)
        if "r" in mode and "+" not in mode:
            return self._open_for_reading(target)
        if self.backend.has_sync_client:
            self._forget(target)
            handle = self.backend.fs.open(target, mode, block_size=block_size, **kwargs)
            return WriteThrough(handle, lambda: self._forget(target))
        if mode != "wb":
            raise ValueError(
                f"edgecache opens objects of {self.backend.identity} for writing in mode 'wb' "
                f"(whole objects), not {mode!r}"
            )
        return SpooledUpload(target, lambda local: self._upload(local, target))

    def _upload(self, local: str, target: str) -> None:
        sync(self.loop, self._write, [target], "put_file", local, target)

    # --- writing -------------------------------------------------------------------------------
    def _forget(self, path: str, *, recursive: bool = False) -> None:
        self.engine.forget(path, block_size=self._block_size, recursive=recursive)

    async def _write(
        self,
        paths: list[str],
        method: str,
        *args: Any,
        forget_below: bool = False,
        **kwargs: Any,
    ) -> None:
        await self.engine.write(
            paths,
            method,
            args,
            kwargs,
            block_size=self._block_size,
            forget_below=forget_below,
        )

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        path = self._target(path)
        await self._write([path], "pipe_file", path, value, mode=mode, **kwargs)

    async def _put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        rpath = self._target(rpath)
        if await asyncio.to_thread(os.path.isdir, lpath):
            await self._write([rpath], "makedirs", rpath, exist_ok=True)
        else:
            await self._write([rpath], "put_file", lpath, rpath, **kwargs)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        path1, path2 = self._target(path1), self._target(path2)
        await self._write([path2], "cp_file", path1, path2, **kwargs)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._target(path)
        await self._write([path], "rm_file", path)

    async def _rm(
        self, path: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any
    ) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        targets = [self._target(p) for p in paths]
        await self._write(
            targets, "rm", targets, forget_below=True, recursive=recursive, maxdepth=maxdepth
        )

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._target(path)
        await self._write([path], "mkdir", path, create_parents=create_parents, **kwargs)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._target(path)
        await self._write([path], "makedirs", path, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        target = self._target(path)
        sync(self.loop, self._write, [target], "rmdir", target)

    def created(self, path: str) -> Any:
        """Creation time, as the backend reports it."""
        return sync(self.loop, self.engine.timestamp, "created", self._target(path))

    def modified(self, path: str) -> Any:
        """Modification time, as the backend reports it."""
        return sync(self.loop, self.engine.timestamp, "modified", self._target(path))

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget cached metadata of ``path`` and everything below it; with no path, all cached
        metadata of this backend (fsspec's meaning: the next call asks the backend)."""
        if path is None:
            self.engine.forget_all()
        else:
            self._forget(self._target(path), recursive=True)


def _relay_through_the_agent() -> None:
    """A pod's reader asks its node's agent (and so the nodepool) for blocks first when
    ``EDGECACHE_POOL_AGENT`` is set (docs/pool.md); imported only then."""
    if os.environ.get("EDGECACHE_POOL_AGENT"):
        from edgecache.pool import relay_from_environment

        relay_from_environment()
