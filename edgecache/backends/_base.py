"""What a backend plugin implements: the boundary between edgecache and an object store.

The filesystem layer (:mod:`edgecache.fs`) turns a URL's protocol into a :class:`Backend` through
the registry (:mod:`edgecache.backends._registry`) and then only talks to the backend through
this class: the fsspec filesystem it wraps, the version of an object (part of every cache key, so
a changed object is never served stale), block fetches, and a cheap health probe.

The two audiences are kept apart: plugin authors implement the abstract members; edgecache calls
the public ones. Secrets stay inside the backend: :attr:`Backend.identity` (used in cache keys,
logs and errors) must never contain one.
"""

from __future__ import annotations

import asyncio
import errno
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, get_loop

from edgecache.errors import BackendUnavailableError, ObjectChangedError

__all__ = ["CLIENT_BINDING_OPTIONS", "Backend", "ObjectChangedError"]

CLIENT_BINDING_OPTIONS = frozenset({"asynchronous", "loop", "skip_instance_cache"})
"""fsspec options saying how a client is bound to an event loop: the backend decides those."""

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ECONNABORTED,
    errno.EPIPE,
}


class Backend(ABC):
    """One configured object store (protocol + options), as edgecache sees it."""

    protocols: ClassVar[tuple[str, ...]] = ()
    """URL protocols this backend serves (the entry-point name must be one of them)."""
    blocking: bool = False
    """True if the wrapped filesystem is synchronous and does blocking I/O (run in threads)."""
    reads_tell_info: ClassVar[bool] = False
    """True if :meth:`fetch_range_and_info` is implemented: a ranged read answers with the
    object's size and version too (S3: ``Content-Range``, ``ETag``, ``Last-Modified``), so a
    read of an object whose metadata is not cached needs no info request before it."""
    remote: ClassVar[bool] = True
    """True if the store is reached over a network link, whose bandwidth WAN QoS shares
    between foreground reads and background loading; local stores (``file``, ``memory``)
    have no link to share, and their fetches are never held back."""

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        self.protocol = protocol
        self.options = dict(options)
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # --- what plugins implement ----------------------------------------------------------------
    @property
    @abstractmethod
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem that talks to the store."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Stable, secret-free name of the store: protocol plus endpoint (``s3|http://h:9000``)."""

    @abstractmethod
    def version(self, info: Mapping[str, Any]) -> str:
        """Version token of an object from its ``info()`` (ETag, version id, size, mtime)."""

    async def probe(self) -> None:
        """Cheap reachability check; raise :class:`BackendUnavailableError` when unreachable.

        The default lists the root, which every fsspec filesystem supports.
        """
        try:
            await self.call("ls", "", detail=False)
        except FileNotFoundError:
            return
        except Exception as exc:
            if self.is_unreachable(exc):
                raise BackendUnavailableError(f"{self.identity} is unreachable: {exc}") from exc

    def is_unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the store cannot be reached (rather than a per-object error)."""
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            return False
        if isinstance(exc, BackendUnavailableError | ConnectionError | TimeoutError):
            return True
        if isinstance(exc, asyncio.TimeoutError):
            return True
        return isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS

    # --- for plugins: a client bound to one loop -----------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the backend's client is bound to: edgecache's I/O loop (fsspec's I/O
        thread), on which the read engine runs every coroutine of this backend."""
        if self._client_loop is None:
            self._client_loop = get_loop()
        return self._client_loop

    def bound_client_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` for an async fsspec client (s3fs, ossfs...) made for this backend alone
        and bound to :attr:`loop`. Never one from fsspec's instance cache: a client shared with
        a filesystem on another loop (zarr's) fails with "attached to a different loop"."""
        kept = {k: v for k, v in options.items() if k not in CLIENT_BINDING_OPTIONS}
        return {**kept, "asynchronous": True, "loop": self.loop, "skip_instance_cache": True}

    # --- what edgecache calls ------------------------------------------------------------------
    def strip(self, path: str) -> str:
        """Normalise a path or URL to the form the store uses (protocol removed)."""
        # The URL may use this backend's own protocol name, which the wrapped filesystem may
        # not know (a plugin registered as "slowfile" over LocalFileSystem).
        own = f"{self.protocol}://"
        if path.startswith(own):
            path = path[len(own) :]
        stripped: str = self.fs._strip_protocol(path)
        return stripped

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        """Bytes ``[start, end)`` of ``path``, which is expected to be at ``version``.

        The default asks the filesystem for the range; backends that can check the version in
        the same request (``If-Match``, ``fstat``) override it and raise
        :class:`ObjectChangedError` on a mismatch.
        """
        fs = self.fs
        if isinstance(fs, AsyncFileSystem) and not self.blocking:
            data: bytes = await fs._cat_file(path, start=start, end=end)
        elif self.blocking:
            data = await asyncio.to_thread(fs.cat_file, path, start=start, end=end)
        else:
            data = fs.cat_file(path, start=start, end=end)
        return data

    async def fetch_range_and_info(
        self, path: str, start: int, end: int
    ) -> tuple[bytes, dict[str, Any]]:
        """Bytes ``[start, end)`` of the current version of ``path`` (fewer when the object
        ends sooner) and its info as ``info()`` gives it, from one request. Only where
        :attr:`reads_tell_info` is True; FileNotFoundError when there is no such object."""
        raise NotImplementedError(f"{type(self).__name__} cannot read an object's info")

    @property
    def has_sync_client(self) -> bool:
        """Whether the wrapped filesystem's own sync API works (a synchronous filesystem): an
        async client bound to :attr:`loop` (s3fs, ossfs) has none, so its file objects for
        writing cannot be used and edgecache uploads whole files instead."""
        return not isinstance(self.fs, AsyncFileSystem) or self.blocking

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a filesystem method the right way (coroutine, thread, or inline).
        NotImplementedError when an async client has no coroutine for it."""
        fs = self.fs
        if isinstance(fs, AsyncFileSystem) and not self.blocking:
            coroutine = getattr(fs, "_" + method, None)
            if coroutine is None:
                raise NotImplementedError(
                    f"{self.identity} cannot {method} (its client has no _{method})"
                )
            return await coroutine(*args, **kwargs)
        if self.blocking:
            return await asyncio.to_thread(getattr(fs, method), *args, **kwargs)
        return getattr(fs, method)(*args, **kwargs)

    async def timestamp(self, kind: Literal["created", "modified"], path: str) -> Any:
        """``path``'s creation or modification time as the store's client reports it (its
        ``created``/``modified``). An async client without that coroutine (s3fs computes
        ``modified`` from ``info()`` through its sync API) is asked for the info, whose
        ``LastModified`` is what s3fs returns; NotImplementedError where the store keeps none."""
        fs = self.fs
        if self.has_sync_client or hasattr(fs, "_" + kind):
            return await self.call(kind, path)
        info = await self.call("info", path)
        if kind == "modified" and "LastModified" in info:
            return info["LastModified"]
        if info.get("type") == "directory":
            raise IsADirectoryError(f"{path} is a directory: it has no {kind} time")
        raise NotImplementedError(f"{self.identity} keeps no {kind} time of {path}")

    async def close(self) -> None:
        """Release the client's connections (its HTTP session): the engine is done with this
        backend. Called on :attr:`loop`. The default has nothing to release; a backend whose
        client holds a session overrides it (left open, aiohttp reports the session as
        unclosed when it is collected)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"
