"""Helpers of the fs-layer tests: test data and backends that log what they are asked for.

``countfile`` and ``countmem`` are the built-in backends plus a log of every block fetch and
metadata call; ``switchfile`` can be cut off (each backend call then raises ``ConnectionError``,
as a WAN link that is down); ``hangfile`` can hang (each call waits, then times out, as over a
blackholed link). ``conftest.py`` registers them for each test, and ``switchfile``/``hangfile``
with fsspec too, so that ``fsspec.open("edgecache::switchfile:///path")`` works as for s3.
Their switches are class attributes: ``fsspec.open`` builds a backend per URL, and one link
serves them all (set them with ``monkeypatch.setattr`` on the class).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from fsspec.implementations.local import LocalFileSystem

from edgecache.backends.local import LocalBackend
from edgecache.backends.memory import MemoryBackend
from edgecache.errors import BackendUnavailableError
from edgecache.fs import EdgeCacheFileSystem

KiB = 1024


class FetchLog:
    """Mixin: records ``(path, start, end)`` of every block fetch and counts metadata calls."""

    fetched: list[tuple[str, int, int]]
    calls: list[str]

    def _init_log(self) -> None:
        self.fetched = []
        self.calls = []

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        self.fetched.append((path, start, end))
        data: bytes = await super().fetch_range(path, start, end, version)  # type: ignore[misc]
        return data

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(method)
        return await super().call(method, *args, **kwargs)  # type: ignore[misc]

    def blocks_fetched(self, block_size: int) -> list[int]:
        """Indices of the blocks fetched so far, in order (repeats kept)."""
        return [start // block_size for _, start, _ in self.fetched]


class CountingLocalBackend(FetchLog, LocalBackend):
    protocols = ("countfile",)

    def __init__(self, protocol: str, options: Any) -> None:
        super().__init__(protocol, options)
        self._init_log()


class CountingMemoryBackend(FetchLog, MemoryBackend):
    protocols = ("countmem",)

    def __init__(self, protocol: str, options: Any) -> None:
        super().__init__(protocol, options)
        self._init_log()


class SwitchableLocalBackend(CountingLocalBackend):
    """Local files behind a link that :attr:`online` can cut."""

    protocols = ("switchfile",)
    online = True
    probes: ClassVar[int] = 0
    """Probes asked for, by every instance (reset it with monkeypatch)."""

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        if not self.online:
            raise ConnectionError("link down")
        return await super().fetch_range(path, start, end, version)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.online:
            raise ConnectionError("link down")
        return await super().call(method, *args, **kwargs)

    async def probe(self) -> None:
        """Fails while the link is cut (local files themselves are always reachable)."""
        SwitchableLocalBackend.probes += 1
        if not self.online:
            raise BackendUnavailableError(f"{self.identity} is unreachable: link down")


class HangingLocalBackend(CountingLocalBackend):
    """Local files behind a link that can hang: while :attr:`hung`, every call and probe waits
    :attr:`hang_seconds` and then fails with ``TimeoutError``, as a request with that timeout does
    over a blackholed link."""

    protocols = ("hangfile",)
    hung: ClassVar[bool] = False
    hang_seconds: ClassVar[float] = 0.3
    waits: ClassVar[int] = 0
    """Calls, fetches and probes that hung, by every instance."""

    def __init__(self, protocol: str, options: Any) -> None:
        super().__init__(protocol, options)
        self.hung_on: list[str] = []
        """What hung on this instance (one engine's requests: ``fetch``, ``probe``, a method);
        engines of earlier tests in the process may still probe, and count in :attr:`waits`."""

    async def _hang_if_hung(self, what: str) -> None:
        if HangingLocalBackend.hung:
            HangingLocalBackend.waits += 1
            self.hung_on.append(what)
            await asyncio.sleep(HangingLocalBackend.hang_seconds)
            raise TimeoutError(f"no answer within {HangingLocalBackend.hang_seconds} s")

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        await self._hang_if_hung("fetch")
        return await super().fetch_range(path, start, end, version)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        await self._hang_if_hung(method)
        return await super().call(method, *args, **kwargs)

    async def probe(self) -> None:
        await self._hang_if_hung("probe")


class LinkedLocalFileSystem(LocalFileSystem):  # type: ignore[misc]
    """fsspec's local filesystem under the test links' protocols, for URL chaining."""

    protocol = ("switchfile", "hangfile")


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes in which every 4 KiB block differs from every other (and per seed)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f"<{seed}:{i:08d}>".encode()
        i += 1
    return bytes(out[:size])


def close_fs(fs: EdgeCacheFileSystem) -> None:
    """Release the cache directory of ``fs`` (its index, I/O threads and metadata database)."""
    fs.engine.close()
