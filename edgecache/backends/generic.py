"""Fallback backend for any other fsspec protocol (http, gcs, ...), used as fsspec knows it.

Protocols with a dedicated edgecache plugin (s3, oss) never fall back here: the registry asks for
the plugin instead. The version comes from the first of ETag / version id / mtime found in the
object's info, with its size.

fsspec implementations report failures their own way, and some hide what happened: fsspec's
http ``info`` answers *every* failure, a refused connection included, with
``FileNotFoundError`` (the real error as its cause). Errors are translated here so that
"unreachable" and "not found" are never confused: a ``FileNotFoundError`` caused by a
connection failure is a :class:`~edgecache.errors.BackendUnavailableError`, and an option the
client library refused late (``TypeError: unexpected keyword argument``) is a
:class:`~edgecache.errors.ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import fsspec
from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem

from edgecache.backends._base import Backend
from edgecache.backends.options import unexpected_option
from edgecache.errors import BackendUnavailableError, ConfigError, quoted

__all__ = ["GenericBackend"]

_VERSION_FIELDS = (
    "ETag",
    "etag",
    "VersionId",
    "version_id",
    "generation",
    "md5",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "created",
)


class GenericBackend(Backend):
    """Wraps ``fsspec.filesystem(protocol, **options)``."""

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        super().__init__(protocol, options)
        cls = fsspec.get_filesystem_class(protocol)
        self.blocking = not issubclass(cls, AsyncFileSystem)
        self._fs = self._client()

    def _client(self) -> AbstractFileSystem:
        """A new client of this backend's own (an async one bound to :attr:`loop`)."""
        cls = fsspec.get_filesystem_class(self.protocol)
        if self.blocking:
            return cls(**self.options)
        return cls(**self.bound_client_options(self.options))

    @property
    def fs(self) -> AbstractFileSystem:
        return self._fs

    async def close(self) -> None:
        # fsspec's aiohttp-based filesystems (http; gcsfs alike) make their session on first
        # use through the public ``set_session()`` and never forget it: a closed one would be
        # used again. Their public ``close_session(loop, session)`` is the finalizer's helper
        # (it cannot await from this loop, so it drops the connections unawaited) and needs
        # the session as well. So the client is replaced by a new one (a later request opens
        # a new session) and the old client's session is closed here, awaited.
        set_session = getattr(self._fs, "set_session", None)
        if self.blocking or set_session is None:
            return
        self._fs = self._client()
        session = await set_session()
        if isinstance(session, aiohttp.ClientSession):
            await session.close()

    @property
    def identity(self) -> str:
        endpoint = self.options.get("endpoint_url") or self.options.get("endpoint") or ""
        return f"{self.protocol}|{endpoint}" if endpoint else self.protocol

    def version(self, info: Mapping[str, Any]) -> str:
        for name in _VERSION_FIELDS:
            if info.get(name) is not None:
                return f"{info.get('size')}-{name}={info[name]}"
        return f"{info.get('size')}"

    def strip(self, path: str) -> str:
        # Some implementations name objects by their whole URL (http keeps "http://host/x"):
        # let the filesystem strip a full URL, never a path with its protocol already cut.
        url = path if "://" in path else f"{self.protocol}://{path}"
        stripped: str = self.fs._strip_protocol(url)
        return stripped

    def is_unreachable(self, exc: BaseException) -> bool:
        # aiohttp's connection errors (the transport of http, and of most async fsspec
        # implementations) are not all OSErrors with a telling errno.
        return isinstance(exc, aiohttp.ClientConnectionError) or super().is_unreachable(exc)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().call(method, *args, **kwargs)
        except Exception as exc:
            path = args[0] if args and isinstance(args[0], str) else ""
            translated = self._translate(exc, path)
            if translated is exc:
                raise
            raise translated from exc

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        try:
            return await super().fetch_range(path, start, end, version)
        except Exception as exc:
            translated = self._translate(exc, path)
            if translated is exc:
                raise
            raise translated from exc

    def _translate(self, exc: BaseException, path: str) -> BaseException:
        url = f"{self.protocol}://{path}" if "://" not in path else path
        option = unexpected_option(exc, self.options)
        if option is not None:
            return ConfigError(
                f"{self.protocol}:// option {quoted(option)} is not accepted "
                f"({type(self._fs).__name__} passed it to a call that refused it)"
            )
        if isinstance(exc, FileNotFoundError):
            cause = self._unreachable_cause(exc)
            if cause is not None:
                return BackendUnavailableError(
                    f"{self.identity} is unreachable while reading {url}: "
                    f"{type(cause).__name__}: {cause}"
                )
        return exc

    def _unreachable_cause(self, exc: BaseException) -> BaseException | None:
        seen = exc.__cause__ or exc.__context__
        for _ in range(8):
            if seen is None:
                return None
            if self.is_unreachable(seen):
                return seen
            seen = seen.__cause__ or seen.__context__
        return None
