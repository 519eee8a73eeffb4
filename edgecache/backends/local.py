"""The built-in ``file`` backend: local or network-mounted files, through fsspec's LocalFileSystem.

It lets everything in edgecache run with no cloud at all, and it is the reference backend the
conformance suite starts from. The version of a file is its size, mtime (ns) and inode, and every
block read checks them on the open file descriptor, so a file replaced between planning a read
and reading a block is detected (:class:`ObjectChangedError`) rather than mixed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from edgecache.backends._base import Backend, ObjectChangedError

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Local files; options are passed to ``LocalFileSystem`` (e.g. ``auto_mkdir``)."""

    protocols = ("file", "local")
    blocking = True
    remote = False

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        super().__init__(protocol, options)
        self._fs = LocalFileSystem(**self.options)

    @property
    def fs(self) -> LocalFileSystem:
        return self._fs

    @property
    def identity(self) -> str:
        return "file"

    async def probe(self) -> None:
        """Local files are always reachable."""

    def version(self, info: Mapping[str, Any]) -> str:
        mtime = info.get("mtime", 0)
        return f"{info.get('size')}-{int(float(mtime) * 1e9)}-{info.get('ino', 0)}"

    @staticmethod
    def _version_of(st: os.stat_result) -> str:
        return f"{st.st_size}-{int(st.st_mtime * 1e9)}-{st.st_ino}"

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        return await asyncio.to_thread(self._read, path, start, end, version)

    def _read(self, path: str, start: int, end: int, version: str) -> bytes:
        with open(path, "rb") as f:
            if self._version_of(os.fstat(f.fileno())) != version:
                raise ObjectChangedError(f"{path} changed since it was listed")
            return os.pread(f.fileno(), end - start, start)
