"""Fallback backend for any other fsspec protocol (http, gcs, ...), used as fsspec knows it.

Protocols with a dedicated edgecache plugin (s3, oss) never fall back here: the registry asks for
the plugin instead. The version comes from the first of ETag / version id / mtime found in the
object's info, with its size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem

from edgecache.backends._base import Backend

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
        self._fs = fsspec.filesystem(protocol, **self.options)
        self.blocking = not isinstance(self._fs, AsyncFileSystem)

    @property
    def fs(self) -> AbstractFileSystem:
        return self._fs

    @property
    def identity(self) -> str:
        endpoint = self.options.get("endpoint_url") or self.options.get("endpoint") or ""
        return f"{self.protocol}|{endpoint}" if endpoint else self.protocol

    def version(self, info: Mapping[str, Any]) -> str:
        for name in _VERSION_FIELDS:
            if info.get(name) is not None:
                return f"{info.get('size')}-{name}={info[name]}"
        return f"{info.get('size')}"
