"""EdgeCacheFileSystem: the fsspec ``edgecache`` protocol, reading any backend through the cache.

Place in the data path::

    user code -- fsspec.open("edgecache::s3://b/k") --> EdgeCacheFileSystem
        metadata (info/ls/find/glob) --> MetadataCache (TTL, on disk) --> backend
        bytes (cat/open/get)         --> BlockKeys --> TieredCache --> backend.fetch_range

It is an fsspec ``AsyncFileSystem`` (coroutines ``_cat_file``, ``_info``... with fsspec's
generated sync wrappers) and a ``ChainedFileSystem`` (so ``edgecache::<url>`` chaining hands it
the target's path). Reads fetch only the blocks a range covers, several in parallel. Writes go
straight to the backend and invalidate the metadata and cached blocks they replace.

When the backend is unreachable, cached metadata is served whatever its age, cached blocks are
served, and anything else raises :class:`~edgecache.errors.BackendUnavailableError` (a
``ConnectionError``) saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import aiofiles
from fsspec.asyn import AsyncFileSystem, sync
from fsspec.implementations.chained import ChainedFileSystem

from edgecache.backends import Backend, ObjectChangedError, get_backend
from edgecache.cache import BlockKey, TieredCache
from edgecache.config import CacheSettings
from edgecache.engine._health import BackendHealth
from edgecache.engine._metadata import CachedInfo, MetadataCache, _parent
from edgecache.engine._scan import ScanDetector
from edgecache.errors import BackendUnavailableError
from edgecache.fs._file import EdgeCacheFile

__all__ = ["EdgeCacheFileSystem"]

_FSSPEC_KWARGS = {
    "fo",
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
}
_METADATA_DB = "metadata.sqlite"
_metadata_caches: dict[tuple[str, float], MetadataCache] = {}


def _shared_metadata(settings: CacheSettings) -> MetadataCache:
    key = (settings.cache_dir, settings.metadata_ttl)
    cache = _metadata_caches.get(key)
    if cache is None or cache.closed:
        cache = _metadata_caches[key] = MetadataCache(
            os.path.join(settings.cache_dir, _METADATA_DB), ttl_seconds=settings.metadata_ttl
        )
    return cache


class EdgeCacheFileSystem(AsyncFileSystem, ChainedFileSystem):  # type: ignore[misc]
    """Cached, offline-tolerant access to any backend, as an fsspec filesystem.

    ``fsspec.filesystem("edgecache", target_protocol="s3", target_options={...},
    cache_dir="/var/cache/edgecache", block_size="4MiB")``; cache options are the names of
    :class:`~edgecache.config.CacheSettings` (sizes accept ``4MiB``/``10Gi``).
    """

    protocol: ClassVar[str] = "edgecache"
    root_marker = ""
    cachable = True

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
        self.backend = backend or get_backend(target_protocol or "file", target_options or {})
        self.cache = TieredCache.shared(self.settings)
        self.metadata = _shared_metadata(self.settings)
        self._identity = self.backend.identity
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self.health = BackendHealth(
            self.backend, probe_interval=self.settings.backend_probe_interval
        )
        self._dir_misses: dict[str, int] = {}
        self._scan = ScanDetector(self.settings.scan_ahead_files)
        self._listing_flights: dict[tuple[int, str], asyncio.Future[list[CachedInfo]]] = {}

    # --- paths ---------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            # fsspec's bulk methods (get, put, cp, rm) strip lists of paths in one call.
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if "::" in text:
            text = text.rsplit("::", 1)[-1]
        if text.startswith("edgecache://"):
            text = text[len("edgecache://") :]
        return text

    def _target(self, path: str) -> str:
        target: str = self.backend.strip(self._strip_protocol(path))
        return target

    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        sem = self._semaphores.get(loop_id)
        if sem is None:
            sem = self._semaphores[loop_id] = asyncio.Semaphore(self.settings.fetch_concurrency)
        return sem

    def _unavailable(self, exc: BaseException | str, what: str) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"backend {self._identity} is unreachable and {what} is not cached: {exc}"
        )

    # --- metadata ------------------------------------------------------------------------------
    async def _ask(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the backend, or fail at once while it is known to be offline."""
        if not self.health.online:
            self.health.ensure_probing()
            raise self._unavailable(self.health.last_error, what)
        try:
            return await self.backend.call(method, *args, **kwargs)
        except Exception as exc:
            if not self.backend.is_unreachable(exc):
                raise
            self.health.went_unreachable(exc)
            raise self._unavailable(exc, what) from exc

    async def _cached_info(self, path: str) -> CachedInfo:
        cached = self.metadata.info(self._identity, path)
        if cached is not None:
            return cached
        cached = await self._info_from_listing(path)
        if cached is not None:
            return cached
        try:
            info = await self._ask(f"the info of {path}", "info", path)
        except FileNotFoundError:
            self.metadata.invalidate(self._identity, path)
            raise
        except BackendUnavailableError:
            stale = self.metadata.info(self._identity, path, allow_stale=True)
            if stale is not None:
                return stale
            if self.metadata.listing(self._identity, path, allow_stale=True) is not None:
                # Its own info was never asked for, but it was listed: it is a directory.
                return CachedInfo({"name": path, "type": "directory", "size": 0}, "", 0.0)
            raise
        return self.metadata.put_info(self._identity, path, info, self._version(info))

    async def _info_from_listing(self, path: str) -> CachedInfo | None:
        """On the second info miss in one directory, list it: one request answers for every
        file in it, instead of a request per file (a training loop opening files one by one)."""
        parent = _parent(path)
        if not parent or parent == path:
            return None
        misses = self._dir_misses.get(parent, 0) + 1
        self._dir_misses[parent] = misses
        if misses < 2 or self.metadata.listing(self._identity, parent) is not None:
            return None
        try:
            await self._ls(parent, detail=False)
        except (OSError, ValueError):
            return None
        return self.metadata.info(self._identity, path)

    def _version(self, info: Mapping[str, Any]) -> str:
        return "" if info.get("type") == "directory" else self.backend.version(info)

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict((await self._cached_info(self._target(path))).info)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Object info; answered from the metadata cache without the event loop when fresh."""
        cached = self.metadata.info(self._identity, self._target(path))
        if cached is not None:
            return dict(cached.info)
        result: dict[str, Any] = sync(self.loop, self._info, path, **kwargs)
        return result

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._target(path)
        entries = self.metadata.listing(self._identity, path)
        if entries is None:
            entries = await self._list_once(path)
        if detail:
            return [dict(e.info) for e in entries]
        return [e.info["name"] for e in entries]

    async def _list_once(self, path: str) -> list[CachedInfo]:
        """List ``path`` from the backend, sharing one request among concurrent callers: a
        ``cat`` of many files of one directory misses their infos all at once, and each miss
        asks for the listing (one LIST per file, each the size of the whole listing)."""
        key = (id(asyncio.get_running_loop()), path)
        flight = self._listing_flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._list_from_backend(path))
            self._listing_flights[key] = flight
            flight.add_done_callback(lambda f: self._listing_flights.pop(key, None))
            flight.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: a caller giving up must not cancel the listing the others wait for.
        return await asyncio.shield(flight)

    async def _list_from_backend(self, path: str) -> list[CachedInfo]:
        try:
            listing = await self._ask(f"the listing of {path}", "ls", path, detail=True)
        except FileNotFoundError:
            self.metadata.invalidate(self._identity, path)
            raise
        except BackendUnavailableError:
            entries = self.metadata.listing(self._identity, path, allow_stale=True)
            if entries is None:
                raise
            return entries
        return self.metadata.put_listing(
            self._identity, path, [(_normal(i), self._version(i)) for i in listing]
        )

    # --- reading -------------------------------------------------------------------------------
    def _key(self, path: str, version: str, index: int) -> BlockKey:
        return BlockKey(self._identity, path, version, index, self.settings.block_size)

    async def _block(self, path: str, version: str, size: int, index: int) -> bytes:
        key = self._key(path, version, index)
        length = min(self.settings.block_size, size - key.start)

        async def fetch() -> bytes:
            if not self.health.online:
                self.health.ensure_probing()
                raise self._unavailable(self.health.last_error, f"block {index} of {path}")
            async with self._semaphore():
                try:
                    return await self.backend.fetch_range(
                        path, key.start, key.start + length, version
                    )
                except Exception as exc:
                    if self.backend.is_unreachable(exc):
                        self.health.went_unreachable(exc)
                    raise

        try:
            return await self.cache.get(key, fetch, expected_size=length)
        except ObjectChangedError:
            raise
        except Exception as exc:
            if self.backend.is_unreachable(exc):
                raise self._unavailable(exc, f"block {index} of {path}") from exc
            raise

    async def _cat_range(self, path: str, version: str, size: int, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``path`` at ``version`` (``size`` bytes long)."""
        end = min(end, size)
        if start >= end:
            return b""
        bs = self.settings.block_size
        first, last = start // bs, (end - 1) // bs
        blocks = await asyncio.gather(
            *(self._block(path, version, size, i) for i in range(first, last + 1))
        )
        offset = start - first * bs
        if len(blocks) == 1:
            return blocks[0][offset : offset + end - start]
        return b"".join(blocks)[offset : offset + end - start]

    def _cat_range_cached(
        self, path: str, version: str, size: int, start: int, end: int
    ) -> bytes | None:
        """Like :meth:`_cat_range` but only from the cache tiers, synchronously; None if any block
        is missing."""
        end = min(end, size)
        if start >= end:
            return b""
        bs = self.settings.block_size
        first, last = start // bs, (end - 1) // bs
        if first == last:
            data = self.cache.get_cached(self._key(path, version, first))
            if data is None:
                return None
            offset = start - first * bs
            return data[offset : offset + end - start]
        # Several blocks: fill one buffer and hand out its bytes without another copy (BytesIO's
        # getvalue() gives its buffer away when no view of it is left), where reading each block
        # and joining them copied every byte twice.
        buffer = io.BytesIO()
        buffer.seek(end - start - 1)
        buffer.write(b"\0")
        with buffer.getbuffer() as view:
            complete = self._fill_cached(view, path, version, size, start, end)
        return buffer.getvalue() if complete else None

    def _fill_cached(
        self, view: memoryview, path: str, version: str, size: int, start: int, end: int
    ) -> bool:
        """Put bytes ``[start, end)`` into ``view`` from the cache tiers; False on a miss."""
        bs = self.settings.block_size
        whole: list[tuple[BlockKey, memoryview]] = []
        for i in range(start // bs, (end - 1) // bs + 1):
            key = self._key(path, version, i)
            lo, hi = max(start, key.start), min(end, key.start + bs, size)
            part = view[lo - start : hi - start]
            if lo == key.start and hi == min(key.start + bs, size):
                whole.append((key, part))
                continue
            data = self.cache.get_cached(key)
            if data is None:
                return False
            part[:] = data[lo - key.start : hi - key.start]
        return self.cache.get_cached_many_into(whole)

    async def _prefetch_blocks(
        self, path: str, version: str, size: int, first: int, last: int
    ) -> None:
        """Bring blocks ``first..last`` into the cache (read-ahead, prefetch)."""
        await asyncio.gather(*(self._block(path, version, size, i) for i in range(first, last + 1)))

    @staticmethod
    def _bounds(size: int, start: int | None, end: int | None) -> tuple[int, int]:
        start = 0 if start is None else (max(size + start, 0) if start < 0 else start)
        end = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
        return start, end

    def _file_info(self, cached: CachedInfo, path: str) -> tuple[str, int]:
        if cached.info.get("type") == "directory":
            raise IsADirectoryError(path)
        return cached.version, int(cached.info["size"])

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._target(path)
        for attempt in range(2):
            cached = await self._cached_info(path)
            version, size = self._file_info(cached, path)
            lo, hi = self._bounds(size, start, end)
            try:
                return await self._cat_range(path, version, size, lo, hi)
            except ObjectChangedError:
                # Listed as one version, now another: re-read the info and plan again once.
                self.metadata.invalidate(self._identity, path)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes of ``path`` (or a range); cached ranges are served without the event loop."""
        target = self._target(path)
        cached = self.metadata.info(self._identity, target)
        if cached is not None and cached.info.get("type") != "directory":
            version, size = self._file_info(cached, target)
            lo, hi = self._bounds(size, start, end)
            data = self._cat_range_cached(target, version, size, lo, hi)
            if data is not None:
                return data
        result: bytes = sync(self.loop, self._cat_file, path, start, end, **kwargs)
        return result

    def iter_cat(self, paths: Sequence[str], *, batch: int = 64) -> Iterator[bytes]:
        """The bytes of ``paths``, in order, as chunks (``edgecache cat`` of many URLs).

        Objects of up to two blocks are fetched ``batch`` at a time, concurrently (a list of
        small files costs about one round trip per batch, not per file); larger ones are
        streamed block by block with read-ahead, so memory stays bounded. The first path that
        fails raises its error after the bytes of the paths before it.
        """
        small_limit = 2 * self.settings.block_size
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
                    while chunk := f.read(self.settings.block_size):
                        yield chunk

    @staticmethod
    async def _gather(coroutines: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        return list(await asyncio.gather(*coroutines, return_exceptions=True))

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        rpath = self._target(rpath)
        bs = self.settings.block_size
        step = bs * max(1, self.settings.fetch_concurrency)
        for attempt in range(2):
            cached = await self._cached_info(rpath)
            if cached.info.get("type") == "directory":
                os.makedirs(lpath, exist_ok=True)
                return
            version, size = self._file_info(cached, rpath)
            try:
                async with aiofiles.open(lpath, "wb") as out:
                    for start in range(0, size, step):
                        data = await self._cat_range(rpath, version, size, start, start + step)
                        await out.write(data)
                return
            except ObjectChangedError:
                # As in _cat_file: re-read the info and copy the new version from the start.
                self.metadata.invalidate(self._identity, rpath)
                if attempt:
                    raise

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
            cached = self.metadata.info(self._identity, target)
            if cached is None:
                cached = sync(self.loop, self._cached_info, target)
            version, size = self._file_info(cached, target)
            self._note_sequential_open(target)
            return EdgeCacheFile(self, target, size=size, version=version)
        self._invalidate(target)
        handle = self.backend.fs.open(target, mode, block_size=block_size, **kwargs)
        return _WriteThrough(handle, lambda: self._invalidate(target))

    def _note_sequential_open(self, path: str) -> None:
        """Read ahead across files of a directory scanned in name order (see ``_scan``)."""
        if self.settings.scan_ahead_files <= 0:
            return
        listing = self.metadata.listing(self._identity, _parent(path))
        if listing is None:
            return
        targets = [
            (str(e.info["name"]), e.version, int(e.info.get("size") or 0))
            for e in self._scan.opened(path, listing)
            # A file whose first block a tier holds is a local read away: fetching it ahead
            # only competes with the reader (and is thrown away when MEM cannot keep it).
            if not self.cache.holds(self._key(str(e.info["name"]), e.version, 0))
        ]
        if not targets:
            return
        future = asyncio.run_coroutine_threadsafe(self._prefetch_first_blocks(targets), self.loop)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _prefetch_first_blocks(self, targets: list[tuple[str, str, int]]) -> None:
        async def one(path: str, version: str, size: int) -> None:
            if size > 0 and self.health.online:
                with contextlib.suppress(Exception):
                    await self._block(path, version, size, 0)

        await asyncio.gather(*(one(*t) for t in targets))

    # --- writing -------------------------------------------------------------------------------
    def _invalidate(self, path: str, *, recursive: bool = False) -> None:
        """Forget metadata and cached blocks of ``path`` (about to be replaced or removed)."""
        cached = self.metadata.info(self._identity, path, allow_stale=True)
        if cached is not None and cached.info.get("type") != "directory":
            size = int(cached.info.get("size") or 0)
            count = (size + self.settings.block_size - 1) // self.settings.block_size
            self.cache.invalidate([self._key(path, cached.version, i) for i in range(count)])
        self.metadata.invalidate(self._identity, path, recursive=recursive)

    async def _write_through(
        self, paths: list[str], method: str, *args: Any, forget_below: bool = False, **kwargs: Any
    ) -> None:
        """Call a writing method of the backend, then forget what it replaced: ``paths`` (and
        with ``forget_below``, everything below them).

        An unreachable backend wrote nothing (object stores replace objects whole), so the
        cache is kept, and stays readable offline; the error is BackendUnavailableError.
        """
        what = f"cannot {method} {', '.join(paths)}"
        if not self.health.online:
            self.health.ensure_probing()
            raise BackendUnavailableError(
                f"backend {self._identity} is unreachable; {what}: {self.health.last_error}"
            )
        try:
            await self.backend.call(method, *args, **kwargs)
        except Exception as exc:
            if self.backend.is_unreachable(exc):
                self.health.went_unreachable(exc)
                raise BackendUnavailableError(
                    f"backend {self._identity} is unreachable; {what}: {exc}"
                ) from exc
            self._invalidate_all(paths, recursive=forget_below)
            raise
        self._invalidate_all(paths, recursive=forget_below)

    def _invalidate_all(self, paths: list[str], *, recursive: bool) -> None:
        for path in paths:
            self._invalidate(path, recursive=recursive)

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        path = self._target(path)
        await self._write_through([path], "pipe_file", path, value, mode=mode, **kwargs)

    async def _put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        rpath = self._target(rpath)
        if await asyncio.to_thread(os.path.isdir, lpath):
            await self._write_through([rpath], "makedirs", rpath, exist_ok=True)
        else:
            await self._write_through([rpath], "put_file", lpath, rpath, **kwargs)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        path1, path2 = self._target(path1), self._target(path2)
        await self._write_through([path2], "cp_file", path1, path2, **kwargs)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._target(path)
        await self._write_through([path], "rm_file", path)

    async def _rm(
        self, path: Any, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any
    ) -> None:
        paths = [path] if isinstance(path, str) else list(path)
        targets = [self._target(p) for p in paths]
        await self._write_through(
            targets, "rm", targets, forget_below=True, recursive=recursive, maxdepth=maxdepth
        )

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._target(path)
        await self._write_through([path], "mkdir", path, create_parents=create_parents, **kwargs)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._target(path)
        await self._write_through([path], "makedirs", path, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        target = self._target(path)
        try:
            self.backend.fs.rmdir(target)
        finally:
            self._invalidate(target)

    def created(self, path: str) -> Any:
        """Creation time, as the backend reports it."""
        return self.backend.fs.created(self._target(path))

    def modified(self, path: str) -> Any:
        """Modification time, as the backend reports it."""
        return self.backend.fs.modified(self._target(path))

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget cached metadata of ``path`` and everything below it; with no path, all cached
        metadata of this backend (fsspec's meaning: the next call asks the backend)."""
        if path is None:
            self.metadata.invalidate_backend(self._identity)
        else:
            self._invalidate(self._target(path), recursive=True)


def _normal(info: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry with its name as ``info()`` names it: some backends (ossfs) end
    directory names with ``/`` in listings only, and the entry must answer ``info`` offline."""
    out = dict(info)
    name = str(out.get("name", ""))
    if len(name) > 1 and name.endswith("/"):
        out["name"] = name.rstrip("/")
    return out


class _WriteThrough:
    """A backend file opened for writing; invalidates the cache once it is closed."""

    def __init__(self, handle: Any, on_close: Any) -> None:
        self._handle = handle
        self._on_close = on_close

    def close(self) -> None:
        try:
            self._handle.close()
        finally:
            self._on_close()

    def __enter__(self) -> _WriteThrough:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __iter__(self) -> Any:
        return iter(self._handle)
