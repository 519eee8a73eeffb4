"""The built-in ``memory`` backend: fsspec's in-process MemoryFileSystem.

For tests, examples and scratch data: no disk and no network. Its objects' versions are size plus
creation time; writes through edgecache also invalidate the blocks they replace explicitly, and
every block read checks the version of the object it reads from, so an object replaced by another
writer between planning a read and reading a block is detected (:class:`ObjectChangedError`)
rather than mixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsspec.implementations.memory import MemoryFileSystem

from edgecache.backends._base import Backend, ObjectChangedError

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """The process-wide fsspec memory store (``memory://``)."""

    protocols = ("memory",)
    remote = False

    def __init__(self, protocol: str, options: Mapping[str, Any]) -> None:
        super().__init__(protocol, options)
        self._fs = MemoryFileSystem(**self.options)

    @property
    def fs(self) -> MemoryFileSystem:
        return self._fs

    @property
    def identity(self) -> str:
        return "memory"

    async def probe(self) -> None:
        """Process memory is always reachable."""

    def version(self, info: Mapping[str, Any]) -> str:
        created: Any = info.get("created")
        stamp = created.timestamp() if hasattr(created, "timestamp") else created
        return f"{info.get('size')}-{stamp}"

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        # One look-up of the stored object, then its version and its bytes: with no await in
        # between, the block comes from the version checked.
        stored = self._fs.store.get(path)
        if stored is None:
            raise FileNotFoundError(path)
        if self.version({"size": stored.size, "created": stored.created}) != version:
            raise ObjectChangedError(f"{path} changed since it was listed")
        with stored.getbuffer() as view:
            return bytes(view[start:end])
