"""Test backend of the prefetch tests: local files that log fetches, can fail, can go offline."""

from __future__ import annotations

from typing import Any

from edgecache.backends.local import LocalBackend


class CountingBackend(LocalBackend):
    """Local files, logging block fetches; paths containing ``broken`` fail to fetch, and those
    containing ``torn`` fail after their first block; the link can be cut (every call raises
    ConnectionError)."""

    protocols = ("pfile",)
    online = True

    def __init__(self, protocol: str, options: Any) -> None:
        super().__init__(protocol, options)
        self.fetched: list[tuple[str, int]] = []

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        if not self.online:
            raise ConnectionError("link down")
        if "broken" in path or ("torn" in path and start > 0):
            raise PermissionError(13, "access denied by the test backend", path)
        self.fetched.append((path, start))
        return await super().fetch_range(path, start, end, version)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.online:
            raise ConnectionError("link down")
        return await super().call(method, *args, **kwargs)
